// Restoring into a new PID namespace (docs/pid-namespace.md): real cgroups, real processes, real
// CRIU. A checkpoint restores there while its saved pids are taken on the host, and twice over,
// each copy in a namespace of its own, counting on from the value it was dumped with; the answer
// names each process's host pid (in the target cgroup) and its pid inside (the saved one). The
// namespace's init lives in the job's cgroup and ends when the job's last process does.

import { test, describe, after } from 'node:test';
import assert from 'node:assert/strict';
import { readdirSync, readFileSync, readlinkSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import type { RestoreSummary } from '../../src/checkpoint/index.js';
import { INIT_PROGRAM } from '../../src/criu/pidns-init.js';
import { HIERARCHIES, Lab, pidAlive, unavailable, waitUntil, workload, type TestCgroup } from '../helpers/lab.js';
import { checkpointerIn, refOf, rejectsWith } from './helpers.js';

const lab = new Lab('pidns');
after(() => lab.cleanup());

const HOST_NS = /\d+/.exec(readlinkSync('/proc/self/ns/pid'))![0];

/** The count files of ns-counter.pl in dir: `root-<ns inode>` -> value. */
function counts(dir: string): Map<string, number> {
  const found = new Map<string, number>();
  for (const name of readdirSync(dir)) {
    const text = readFileSync(join(dir, name), 'utf8').trim();
    // A file just made is empty until its first write.
    if (/^\d+$/.test(text)) found.set(name, Number(text));
  }
  return found;
}

function nsPidsOf(pid: number): number[] {
  return /^NSpid:\s+(.*)$/m
    .exec(readFileSync(`/proc/${pid}/status`, 'utf8'))![1]
    .trim()
    .split(/\s+/)
    .map(Number);
}

/** Processes running our namespace init (perl -e INIT_PROGRAM), or unshare starting one. */
function namespaceInits(): number[] {
  const found: number[] = [];
  for (const entry of readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      if (readFileSync(`/proc/${entry}/cmdline`, 'utf8').includes(INIT_PROGRAM)) found.push(Number(entry));
    } catch {
      // exited
    }
  }
  return found;
}

/** Two ns-counter.pl trees (a root and a child each) in a new cgroup, each counting into its own directory. */
async function twoCounterTrees(hierarchy: (typeof HIERARCHIES)[number], name: string) {
  const cgroup = lab.cgroup(hierarchy, name);
  const dirs = [lab.tempDir(`${name}-a`), lab.tempDir(`${name}-b`)];
  for (const dir of dirs) {
    lab.spawnIn(cgroup, workload('ns-counter.pl'), [dir]);
    await waitUntil(`${dir} to count`, () => (counts(dir).get(`child-${HOST_NS}`) ?? 0) > 20, 30_000);
  }
  const pids = (await lab.waitForProcesses(cgroup, 4)).sort((a, b) => a - b);
  return { cgroup, dirs, pids };
}

/** What every restore into a new namespace must show: host pids in the cgroup, saved pids inside, one namespace. */
function assertPlaced(summary: RestoreSummary, target: TestCgroup, savedPids: readonly number[]): string {
  assert.equal(summary.pidNamespace, 'new');
  assert.deepEqual(
    summary.processes.map((p) => p.nsPid).sort((a, b) => a! - b!),
    [...savedPids].sort((a, b) => a - b),
    'inside, every process has its saved pid',
  );
  assert.deepEqual(
    summary.processes.map((p) => p.pid),
    summary.pids,
  );
  const inCgroup = lab.pidsOf(target).sort((a, b) => a - b);
  assert.deepEqual(
    inCgroup,
    [...summary.pids, summary.namespaceInit!].sort((a, b) => a - b),
    'the restored processes and the init',
  );
  const ns = readlinkSync(`/proc/${summary.namespaceInit}/ns/pid`);
  assert.notEqual(ns, readlinkSync('/proc/self/ns/pid'));
  assert.deepEqual(nsPidsOf(summary.namespaceInit!).slice(-1), [1], 'the init is pid 1 inside');
  for (const { pid, nsPid } of summary.processes) {
    assert.equal(readlinkSync(`/proc/${pid}/ns/pid`), ns, `${pid} is in the namespace`);
    assert.deepEqual(nsPidsOf(pid), [pid, nsPid], `NSpid of ${pid}`);
  }
  return /\d+/.exec(ns)![0];
}

for (const hierarchy of HIERARCHIES) {
  describe(`restore into a new PID namespace, cgroup ${hierarchy}`, { skip: unavailable(hierarchy) }, () => {
    test('restored twice: two running copies, each in its own namespace, both counting on from the checkpoint', async () => {
      const { cgroup, dirs, pids } = await twoCounterTrees(hierarchy, 'twice');
      const checkpointer = checkpointerIn(lab);
      const summary = await checkpointer.checkpoint(refOf(cgroup), { after: 'killed' });
      // Killed after the dump: the last values written in the host's namespace are what the image holds (or one less).
      const atCheckpoint = dirs.map((dir) => counts(dir));
      const copies = [lab.cgroup(hierarchy, 'twice-copy-1'), lab.cgroup(hierarchy, 'twice-copy-2')];
      const restored: RestoreSummary[] = [];
      for (const copy of copies) restored.push(await checkpointer.restore(summary.id, { cgroup: copy.path, pidNamespace: 'new' }));
      const namespaces = restored.map((r, i) => assertPlaced(r, copies[i], pids));
      assert.notEqual(namespaces[0], namespaces[1], 'a namespace each');
      assert.equal(new Set(restored.flatMap((r) => r.pids)).size, 8, 'eight distinct host pids');
      for (const [i, dir] of dirs.entries()) {
        for (const role of ['root', 'child']) {
          const dumped = atCheckpoint[i].get(`${role}-${HOST_NS}`)!;
          for (const ns of namespaces) {
            const file = `${role}-${ns}`;
            await waitUntil(`${dir}/${file} to count past ${dumped + 5}`, () => (counts(dir).get(file) ?? 0) > dumped + 5, 30_000);
          }
          const now = counts(dir);
          for (const ns of namespaces) {
            const value = now.get(`${role}-${ns}`)!;
            // Counting on, not again from 1: the first value a copy writes is the dumped one plus one.
            assert.ok(value > dumped, `${role} in namespace ${ns}: ${value} > ${dumped}`);
          }
        }
      }
      for (const copy of copies) await lab.killIn(copy);
    });

    test('saved pids held on the host: EBUSY suggesting --pid-namespace new; with it, restored beside the originals', async () => {
      const { cgroup, pids } = await twoCounterTrees(hierarchy, 'held');
      const checkpointer = checkpointerIn(lab);
      const summary = await checkpointer.checkpoint(refOf(cgroup), { after: 'thawed' });
      const target = lab.cgroup(hierarchy, 'held-copy');
      await assert.rejects(
        checkpointer.restore(summary.id, { cgroup: target.path }),
        rejectsWith('EBUSY', new RegExp(`pid ${pids[0]}: .*--pid-namespace new`)),
      );
      assert.deepEqual(lab.pidsOf(target), [], 'the refused restore restored nothing');
      const restored = await checkpointer.restore(summary.id, { cgroup: target.path, pidNamespace: 'new' });
      assertPlaced(restored, target, pids);
      assert.deepEqual(
        lab.pidsOf(cgroup).sort((a, b) => a - b),
        pids,
        'the originals run on with their pids',
      );
      await lab.killIn(target);
      await lab.killIn(cgroup);
    });

    test("the job's end ends the namespace: its init reaps the last process and exits", async () => {
      const { cgroup, pids } = await twoCounterTrees(hierarchy, 'ending');
      const checkpointer = checkpointerIn(lab);
      const summary = await checkpointer.checkpoint(refOf(cgroup), { after: 'killed' });
      const restored = await checkpointer.restore(summary.id, { pidNamespace: 'new' });
      assertPlaced(restored, cgroup, pids);
      const init = restored.namespaceInit!;
      // The roots first: their children are orphaned to the init, which must go on holding the
      // namespace while they run, then reap them.
      const savedRoots = checkpointer.show(summary.id).trees.map((t) => t.root);
      const roots = restored.processes.filter((p) => savedRoots.includes(p.nsPid!));
      for (const { pid } of roots) process.kill(pid, 'SIGKILL');
      await waitUntil('the roots to be reaped', () => roots.every(({ pid }) => !pidAlive(pid)));
      assert.equal(pidAlive(init), true, 'the init holds the namespace while the children run');
      const children = restored.processes.filter((p) => !roots.includes(p));
      for (const { pid } of children) assert.equal(pidAlive(pid), true, `child ${pid} runs on`);
      for (const { pid } of children) process.kill(pid, 'SIGKILL');
      await waitUntil('the init to exit', () => !pidAlive(init));
      assert.deepEqual(lab.pidsOf(cgroup), []);
    });

    test('a restore that fails part-way (the second tree cannot be restored) ends the namespace: nothing is left running', async () => {
      const cgroup = lab.cgroup(hierarchy, 'fails');
      // counter-tree.pl keeps its count files open, so CRIU needs them back at restore: the second
      // tree's file removed after the checkpoint makes that tree's restore fail, after the first
      // tree was restored into the namespace.
      const dirs = [lab.tempDir('fails-a'), lab.tempDir('fails-b')];
      for (const dir of dirs) {
        lab.spawnIn(cgroup, workload('counter-tree.pl'), [dir, '1']);
        await waitUntil(
          `${dir} to count`,
          () => readdirSync(dir).length === 2 && Number(readFileSync(join(dir, 'child-1'), 'utf8')) > 2,
          30_000,
        );
      }
      await lab.waitForProcesses(cgroup, 4);
      const checkpointer = checkpointerIn(lab);
      const summary = await checkpointer.checkpoint(refOf(cgroup), { after: 'killed' });
      const treeOf = (dir: string) =>
        checkpointer.show(summary.id).trees.findIndex((t) => t.processes.some((p) => p.command.includes(dir)));
      const second = dirs.find((dir) => treeOf(dir) === 1)!;
      rmSync(join(second, 'root'));
      const before = namespaceInits();
      const target = lab.cgroup(hierarchy, 'fails-target');
      await assert.rejects(
        checkpointer.restore(summary.id, { cgroup: target.path, pidNamespace: 'new' }),
        rejectsWith('ECRIU', /criu restore .* in PID namespace of \d+ failed/),
      );
      assert.deepEqual(lab.pidsOf(target), [], 'the first tree was undone');
      await waitUntil('no init of ours left', () => namespaceInits().filter((pid) => !before.includes(pid)).length === 0);
      assert.deepEqual(
        namespaceInits().filter((pid) => !before.includes(pid)),
        [],
      );
      assert.equal(checkpointer.control.status(refOf(target)).locked, false);
    });

    test('a job restored into a new namespace cannot be checkpointed again: ECRIU saying why, and the job runs on', async () => {
      const { cgroup, pids } = await twoCounterTrees(hierarchy, 'again');
      const checkpointer = checkpointerIn(lab);
      const summary = await checkpointer.checkpoint(refOf(cgroup), { after: 'killed' });
      const restored = await checkpointer.restore(summary.id, { pidNamespace: 'new' });
      assertPlaced(restored, cgroup, pids);
      await assert.rejects(
        checkpointer.checkpoint(refOf(cgroup), { after: 'killed' }),
        rejectsWith('ECRIU', /is in a time namespace below its tree's root.*--pid-namespace new.*cannot be checkpointed again/),
      );
      for (const pid of [...restored.pids, restored.namespaceInit!]) assert.equal(pidAlive(pid), true, `${pid} runs on`);
      await lab.killIn(cgroup);
    });
  });
}
