// The v1 and v2 freezer drivers against the real kernel: real cgroups, real processes.

import { test, describe, after } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, readFileSync, rmdirSync, writeFileSync } from 'node:fs';
import { execFileSync } from 'node:child_process';
import { join } from 'node:path';
import { openFreezer, resolveCgroup, withFreezer } from '../../src/cgroup/index.js';
import { isAgentError } from '../../src/errors/index.js';
import { HIERARCHIES, Lab, unavailable, pidAlive, processState, sleepSync, waitUntil, workload, type TestCgroup } from '../helpers/lab.js';

const lab = new Lab('freezer');
after(() => lab.cleanup());

function readCounter(file: string): string {
  return readFileSync(file, 'utf8');
}

// The counter truncates its file before writing the next number, so a freeze can catch it between
// the two: compare the raw content (empty included), not the parsed number.
// Waits of up to 30 s: a counter starved by a loaded 2-core machine (load 15 seen) still counts,
// only later. These bound the wait; they do not judge speed.
const COUNTER_WAIT_MS = 30_000;

async function waitForCounterChange(file: string, from: string): Promise<void> {
  const deadline = Date.now() + COUNTER_WAIT_MS;
  for (;;) {
    const now = readCounter(file);
    if (now !== from && now.trim() !== '') return;
    if (Date.now() > deadline) throw new Error(`counter ${file} did not move on from "${from.trim()}"`);
    await new Promise((r) => setTimeout(r, 10));
  }
}

async function waitForCounter(file: string): Promise<void> {
  const deadline = Date.now() + COUNTER_WAIT_MS;
  for (;;) {
    try {
      if (Number(readCounter(file).trim()) >= 1) return;
    } catch {
      // not written yet
    }
    if (Date.now() > deadline) throw new Error(`counter ${file} never started`);
    await new Promise((r) => setTimeout(r, 10));
  }
}

function freezerOf(cgroup: TestCgroup) {
  return openFreezer(resolveCgroup(cgroup.path, { hierarchy: cgroup.hierarchy }));
}

for (const hierarchy of HIERARCHIES) {
  describe(`${hierarchy} freezer on real cgroups`, { skip: unavailable(hierarchy) }, () => {
    test('processCounts: the cgroup itself and its subtree, with and without sub-cgroups, as processes() and subtreeProcesses() count', async () => {
      const top = lab.cgroup(hierarchy, 'counts');
      lab.spawnIn(top, 'sleep', ['100000']);
      lab.spawnIn(top, 'sleep', ['100000']);
      await lab.waitForProcesses(top, 2);
      const leaf = freezerOf(top);
      try {
        assert.deepEqual(leaf.processCounts(), { processes: 2, subtreeProcesses: 2 }, 'no sub-cgroup');
      } finally {
        leaf.close();
      }
      const child = lab.cgroup(hierarchy, 'counts/child');
      const empty = lab.cgroup(hierarchy, 'counts/child/empty');
      lab.spawnIn(child, 'sleep', ['100000']);
      await lab.waitForProcesses(child, 1);
      const freezer = freezerOf(top);
      try {
        assert.deepEqual(freezer.processCounts(), { processes: 2, subtreeProcesses: 3 });
        assert.deepEqual(freezer.processCounts(), {
          processes: freezer.processes().length,
          subtreeProcesses: freezer.subtreeProcesses().length,
        });
      } finally {
        freezer.close();
      }
      const inner = freezerOf(empty);
      try {
        assert.deepEqual(inner.processCounts(), { processes: 0, subtreeProcesses: 0 });
      } finally {
        inner.close();
      }
    });

    test('freezes and thaws sleepers, busy loops and counters: they really stop, then run again', async () => {
      const cgroup = lab.cgroup(hierarchy, 'mixed');
      const dir = lab.tempDir('counters');
      const counterFile = join(dir, 'count');
      lab.spawnIn(cgroup, 'sleep', ['100000']);
      lab.spawnIn(cgroup, workload('busy.sh'));
      lab.spawnIn(cgroup, workload('counter.sh'), [counterFile]);
      const pids = await lab.waitForProcesses(cgroup, 3);
      await waitForCounter(counterFile);

      await withFreezer(resolveCgroup(cgroup.path, { hierarchy }), async (freezer) => {
        assert.equal(freezer.state(), 'THAWED');
        assert.deepEqual(freezer.processes().sort(), pids.sort());
        await freezer.freeze();
        assert.equal(freezer.state(), 'FROZEN');
        const raw =
          hierarchy === 'v1'
            ? readFileSync(join(cgroup.dir, 'freezer.state'), 'utf8').trim()
            : /^frozen (\d)$/m.exec(readFileSync(join(cgroup.dir, 'cgroup.events'), 'utf8'))?.[1];
        assert.equal(raw, hierarchy === 'v1' ? 'FROZEN' : '1', 'the kernel itself says frozen');

        const frozenAt = readCounter(counterFile);
        sleepSync(150);
        assert.equal(readCounter(counterFile), frozenAt, 'a frozen counter does not move');
        for (const pid of pids) {
          // v1 parks frozen tasks in D; v2 in an interruptible stop (S). Never running.
          assert.notEqual(processState(pid), 'R', `pid ${pid} is not running while frozen`);
        }

        await freezer.thaw();
        assert.equal(freezer.state(), 'THAWED');
        await waitForCounterChange(counterFile, frozenAt);
      });
    });

    test('freezes a whole process tree', async () => {
      const cgroup = lab.cgroup(hierarchy, 'tree');
      const dir = lab.tempDir('tree');
      lab.spawnIn(cgroup, workload('tree.sh'), [dir, '2']);
      await lab.waitForProcesses(cgroup, 5);
      await waitForCounter(join(dir, 'child-1'));
      await waitForCounter(join(dir, 'child-2'));
      const freezer = freezerOf(cgroup);
      try {
        await freezer.freeze();
        const frozen = [readCounter(join(dir, 'child-1')), readCounter(join(dir, 'child-2'))];
        sleepSync(100);
        assert.deepEqual([readCounter(join(dir, 'child-1')), readCounter(join(dir, 'child-2'))], frozen);
        assert.equal(freezer.processes().length, 5);
        await freezer.thaw();
        await waitForCounterChange(join(dir, 'child-1'), frozen[0]);
        await waitForCounterChange(join(dir, 'child-2'), frozen[1]);
      } finally {
        freezer.close();
      }
    });

    test('an empty cgroup freezes; freezing twice and thawing a thawed cgroup are no-ops', async () => {
      const cgroup = lab.cgroup(hierarchy, 'empty');
      const freezer = freezerOf(cgroup);
      try {
        assert.deepEqual(freezer.processes(), []);
        await freezer.freeze();
        await freezer.freeze();
        assert.equal(freezer.state(), 'FROZEN');
        assert.deepEqual(freezer.status(), { state: 'FROZEN', selfFreezing: true, parentFreezing: false });
        await freezer.thaw();
        await freezer.thaw();
        assert.deepEqual(freezer.status(), { state: 'THAWED', selfFreezing: false, parentFreezing: false });
      } finally {
        freezer.close();
      }
    });

    test('a child of a frozen parent reports "frozen by parent" and refuses to thaw alone', async () => {
      const parent = lab.cgroup(hierarchy, 'parent');
      const child = lab.cgroup(hierarchy, 'parent/child');
      lab.spawnIn(child, 'sleep', ['100000']);
      await lab.waitForProcesses(child, 1);
      const parentFreezer = freezerOf(parent);
      const childFreezer = freezerOf(child);
      try {
        await parentFreezer.freeze();
        const status = childFreezer.status();
        assert.equal(status.state, 'FROZEN');
        assert.equal(status.parentFreezing, true);
        assert.equal(status.selfFreezing, false);
        assert.equal(status.frozenBy, parent.path);
        await assert.rejects(childFreezer.thaw(), (err: unknown) => {
          assert.ok(isAgentError(err, 'EBUSY'));
          assert.match(err.message, new RegExp(`frozen by its parent ${parent.path}`));
          return true;
        });
        assert.equal(childFreezer.state(), 'FROZEN', 'the refused thaw changed nothing');
        await parentFreezer.thaw();
        assert.deepEqual(childFreezer.status(), { state: 'THAWED', selfFreezing: false, parentFreezing: false });
        assert.equal(childFreezer.state(), 'THAWED', 'state() walks the ancestors when its own files do not say frozen');
        await childFreezer.freeze();
        await parentFreezer.freeze();
        assert.deepEqual(childFreezer.status(), { state: 'FROZEN', selfFreezing: true, parentFreezing: true, frozenBy: parent.path });
        assert.equal(childFreezer.state(), 'FROZEN', 'frozen by itself and by its parent');
        await parentFreezer.thaw();
        assert.equal(childFreezer.state(), 'FROZEN', 'still frozen by itself once the parent thaws');
        await childFreezer.thaw();
        assert.equal(childFreezer.state(), 'THAWED');
      } finally {
        parentFreezer.close();
        childFreezer.close();
      }
    });

    test('a cgroup removed under an open freezer gives ENOENT naming it', async () => {
      const cgroup = lab.cgroup(hierarchy, 'vanishing');
      const freezer = freezerOf(cgroup);
      try {
        rmdirSync(cgroup.dir);
        assert.throws(
          () => freezer.state(),
          (err: unknown) => {
            assert.ok(isAgentError(err, 'ENOENT'));
            assert.match(err.message, new RegExp(`${cgroup.path} no longer exists`));
            return true;
          },
        );
        await assert.rejects(freezer.freeze(), (err: unknown) => isAgentError(err, 'ENOENT'));
      } finally {
        freezer.close();
      }
    });

    test('killAll kills frozen processes and waits until their pids are gone', async () => {
      const cgroup = lab.cgroup(hierarchy, 'kill');
      lab.spawnIn(cgroup, 'sleep', ['100000']);
      lab.spawnIn(cgroup, workload('busy.sh'));
      const pids = await lab.waitForProcesses(cgroup, 2);
      const freezer = freezerOf(cgroup);
      try {
        await freezer.freeze();
        await freezer.killAll();
        assert.deepEqual(freezer.processes(), []);
        for (const pid of pids) assert.equal(pidAlive(pid), false, `pid ${pid} is gone`);
        assert.equal(freezer.state(), 'THAWED');
      } finally {
        freezer.close();
      }
    });

    test('killAll of a cgroup that its maker removes the moment it is empty (as systemd does a service whose main process died) ends without error', async () => {
      const cgroup = lab.cgroup(hierarchy, 'kill-removed');
      lab.spawnIn(cgroup, 'sleep', ['100000']);
      await lab.waitForProcesses(cgroup, 1);
      const freezer = freezerOf(cgroup);
      try {
        await freezer.freeze();
        // The remover tries rmdir without pause (for at most 60 s): it wins the first moment the
        // cgroup is empty, which is between killAll's rounds or before its thaw.
        const remover = lab.spawn('perl', ['-e', 'alarm 60; until (rmdir $ARGV[0]) { } print "removed\\n"', cgroup.dir], {
          stdio: ['ignore', 'pipe', 'ignore'],
        });
        const removed = new Promise<string>((resolve) => {
          let out = '';
          remover.stdout!.on('data', (d: Buffer) => (out += d.toString()));
          remover.on('exit', () => resolve(out.trim()));
        });
        await freezer.killAll();
        assert.equal(await removed, 'removed', 'the remover took the cgroup away');
        assert.equal(existsSync(cgroup.dir), false);
      } finally {
        freezer.close();
      }
    });

    test('killAll kills the whole subtree: a nested child, and a grandchild frozen on its own', async () => {
      const top = lab.cgroup(hierarchy, 'kill-tree');
      const child = lab.cgroup(hierarchy, 'kill-tree/child');
      const grandchild = lab.cgroup(hierarchy, 'kill-tree/child/grandchild');
      for (const cgroup of [top, child, grandchild]) lab.spawnIn(cgroup, 'sleep', ['100000']);
      const pids = (await Promise.all([top, child, grandchild].map((c) => lab.waitForProcesses(c, 1)))).flat();
      const grandchildFreezer = freezerOf(grandchild);
      const freezer = freezerOf(top);
      try {
        // Frozen by itself while its parents run: thawing the top alone would not let it die on v1.
        await grandchildFreezer.freeze();
        await freezer.killAll();
        for (const cgroup of [top, child, grandchild]) assert.deepEqual(lab.pidsOf(cgroup), [], `${cgroup.path} is empty`);
        for (const pid of pids) assert.equal(pidAlive(pid), false, `pid ${pid} is gone`);
        assert.equal(freezer.state(), 'THAWED');
      } finally {
        grandchildFreezer.close();
        freezer.close();
      }
    });

    test(
      hierarchy === 'v1'
        ? 'killAll of a cgroup frozen by its parent is EBUSY naming the parent (v1 tasks die only once thawed)'
        : 'killAll of a cgroup frozen by its parent kills it anyway (v2 frozen tasks die on SIGKILL)',
      async () => {
        const parent = lab.cgroup(hierarchy, 'kill-parent');
        const child = lab.cgroup(hierarchy, 'kill-parent/child');
        lab.spawnIn(child, 'sleep', ['100000']);
        const [pid] = await lab.waitForProcesses(child, 1);
        const parentFreezer = freezerOf(parent);
        const childFreezer = freezerOf(child);
        try {
          await parentFreezer.freeze();
          if (hierarchy === 'v1') {
            await assert.rejects(childFreezer.killAll(), (err: unknown) => {
              assert.ok(isAgentError(err, 'EBUSY'), String(err));
              assert.match(err.message, new RegExp(`frozen by its parent ${parent.path}`));
              return true;
            });
            assert.ok(pidAlive(pid), 'nothing was killed');
          } else {
            await childFreezer.killAll();
            assert.equal(pidAlive(pid), false);
            assert.equal(childFreezer.state(), 'FROZEN', 'still frozen by its parent, and empty');
          }
        } finally {
          await parentFreezer.thaw();
          parentFreezer.close();
          childFreezer.close();
        }
      },
    );

    test('stress: a cgroup that forks continually ends FROZEN or fails cleanly thawed, never stuck', async () => {
      const cgroup = lab.cgroup(hierarchy, 'forker');
      for (let i = 0; i < 4; i++) lab.spawnIn(cgroup, workload('forker.sh'));
      await lab.waitForProcesses(cgroup, 4);
      const freezer = freezerOf(cgroup);
      const outcomes: string[] = [];
      try {
        for (let round = 0; round < 10; round++) {
          try {
            await freezer.freeze({ timeoutMs: 2000 });
            assert.equal(freezer.state(), 'FROZEN');
            outcomes.push('frozen');
          } catch (err) {
            assert.ok(isAgentError(err, 'ETIMEDOUT'), `only a timeout may fail the freeze, got ${String(err)}`);
            assert.equal(freezer.state(), 'THAWED', 'a failed freeze leaves the cgroup thawed');
            outcomes.push('timed out');
          }
          await freezer.thaw();
          assert.equal(freezer.state(), 'THAWED');
        }
      } finally {
        freezer.close();
        // Four forkers left running would load every later test (badly so under emulation).
        await lab.killIn(cgroup);
      }
      assert.equal(outcomes.length, 10);
    });
  });
}

test('freezing the cgroup agentd itself runs in is refused', { skip: unavailable('v2') }, async () => {
  const cgroup = lab.cgroup('v2', 'self');
  // A child process joins the cgroup, tries to freeze it, then moves back to the cgroup it started
  // in: the v2 root on a host without systemd, a service's or a session's cgroup under systemd.
  const procs = join(cgroup.dir, 'cgroup.procs');
  const startedIn = /^0::(\/.*)$/m.exec(readFileSync('/proc/self/cgroup', 'utf8'))?.[1];
  assert.ok(startedIn !== undefined, 'the test runner is in a cgroup2 cgroup');
  const homeProcs = join(lab.mount('v2'), startedIn, 'cgroup.procs');
  // own-cgroup detection reads /proc/self/cgroup once per process, so use a fresh child process.
  const script = `
    import { openFreezer, resolveCgroup } from ${JSON.stringify(new URL('../../src/cgroup/index.js', import.meta.url).href)};
    import { writeFileSync } from 'node:fs';
    writeFileSync(${JSON.stringify(procs)}, String(process.pid));
    const f = openFreezer(resolveCgroup(${JSON.stringify(cgroup.path)}, { hierarchy: 'v2' }));
    try { await f.freeze(); console.log('froze'); } catch (e) { console.log(e.code + ' ' + e.message); }
    f.close();
    writeFileSync(${JSON.stringify(homeProcs)}, String(process.pid));
  `;
  // Node alone takes seconds to start under software emulation (the VM suite): allow a minute.
  const out = execFileSync(process.execPath, ['--input-type=module', '-e', script], { encoding: 'utf8', timeout: 60_000 });
  assert.match(out, /^EINVAL .*contains agentd itself/);
  assert.deepEqual(lab.pidsOf(cgroup), [], 'the child left the cgroup again');
});

// The kernel marks a v2 cgroup frozen once its own tasks are, before its descendants' are
// (docs/freezer.md, "A parent reads frozen before its children"); a loaded CI machine caught a
// parent reading `frozen 1` while its child did not. Here the child's task is held back for as long
// as the test wants: it is also in a v1 freezer cgroup that is frozen, and a task in v1's
// refrigerator cannot take v2's freeze until v1 lets it go. Needs both hierarchies (a hybrid host).
describe(
  'v2: a freeze waits for every descendant, not only for the cgroup itself',
  { skip: unavailable('v1') || unavailable('v2') },
  () => {
    const eventsSay = (cgroup: TestCgroup) => /^frozen (\d)$/m.exec(readFileSync(join(cgroup.dir, 'cgroup.events'), 'utf8'))?.[1];

    async function heldChild(name: string) {
      const top = lab.cgroup('v2', name);
      const child = lab.cgroup('v2', `${name}/a`);
      const hold = lab.cgroup('v1', `${name}-hold`);
      lab.spawnIn(top, 'sleep', ['100000']);
      const held = lab.spawnIn(child, 'sleep', ['100000']);
      await lab.waitForProcesses(top, 1);
      await lab.waitForProcesses(child, 1);
      writeFileSync(join(hold.dir, 'cgroup.procs'), String(held.pid));
      const holder = freezerOf(hold);
      await holder.freeze();
      return { top, child, holder };
    }

    test('the freeze returns only once the child is frozen too; meanwhile the parent reads FREEZING', async () => {
      const { top, child, holder } = await heldChild('late-child');
      const freezer = freezerOf(top);
      try {
        let settled = false;
        const freezing = freezer.freeze({ timeoutMs: 30_000 }).finally(() => (settled = true));
        await waitUntil('the parent reads frozen 1 in cgroup.events', () => eventsSay(top) === '1');
        // The kernel's own word, which a freeze used to trust: the parent frozen, its child not.
        assert.equal(eventsSay(child), '0', 'the child is not frozen while v1 holds its task');
        await new Promise((r) => setTimeout(r, 200));
        assert.equal(settled, false, 'the freeze has not returned while a descendant is not frozen');
        assert.equal(freezer.state(), 'FREEZING');
        assert.equal(freezer.status().state, 'FREEZING');
        await holder.thaw();
        await freezing;
        assert.equal(eventsSay(child), '1', 'once the freeze returned, the child is frozen');
        assert.equal(freezer.state(), 'FROZEN');
        await freezer.thaw();
        assert.equal(eventsSay(top), '0');
        assert.equal(eventsSay(child), '0');
      } finally {
        freezer.close();
        holder.close();
      }
    });

    test('a descendant that never freezes: ETIMEDOUT naming it, and the parent thawed again', async () => {
      const { top, child, holder } = await heldChild('stuck-child');
      const freezer = freezerOf(top);
      try {
        await assert.rejects(freezer.freeze({ timeoutMs: 300 }), (err: unknown) => {
          assert.ok(isAgentError(err, 'ETIMEDOUT'), String(err));
          assert.match(err.message, new RegExp(`its own tasks froze; not those of v2:${top.path}/a\\)`));
          assert.match(err.message, /thawed it again$/);
          return true;
        });
        assert.equal(readFileSync(join(top.dir, 'cgroup.freeze'), 'utf8').trim(), '0');
        assert.equal(eventsSay(top), '0');
        assert.equal(freezer.state(), 'THAWED');
        await holder.thaw();
        assert.equal(eventsSay(child), '0', 'the held task runs again once v1 lets it go');
      } finally {
        freezer.close();
        holder.close();
      }
    });
  },
);
