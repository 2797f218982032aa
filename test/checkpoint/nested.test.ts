// A checkpoint of a cgroup is a checkpoint of its whole subtree (docs/nested.md), with the real CRIU
// on real v1 and v2 cgroups: a process only in P/child is dumped (no ESRCH); processes in P, P/a,
// P/a/b and P/c are dumped --after killed, restored in place with the sub-cgroups made again, each
// back in its own and counting on, and restored again into a new cgroup with the same layout below it.

import { test, describe, after } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, rmdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { readProcStat } from '../../src/proc/index.js';
import { HIERARCHIES, Lab, pidAlive, unavailable, workload, type TestCgroup } from '../helpers/lab.js';
import { checkpointerIn, counterValue, refOf, rejectsWith, waitForCount } from './helpers.js';

const lab = new Lab('nested');
after(() => lab.cleanup());

/** Which of the cgroups holds each pid, by the cgroups' own cgroup.procs. */
function placement(cgroups: Record<string, TestCgroup>): Map<number, string> {
  const where = new Map<number, string>();
  for (const [sub, cgroup] of Object.entries(cgroups)) {
    if (!existsSync(cgroup.dir)) continue;
    for (const pid of lab.pidsOf(cgroup)) where.set(pid, sub);
  }
  return where;
}

/** Counters named in `names` under `dir` all move past the values they had. */
async function countingOn(dir: string, names: readonly string[], from: Record<string, number>): Promise<void> {
  for (const name of names) {
    const file = join(dir, name);
    await waitForCount(file, from[name]);
    assert.ok(counterValue(file) < from[name] + 1000, `${name} resumed from ${from[name]}, not from zero`);
  }
}

function valuesOf(dir: string, names: readonly string[]): Record<string, number> {
  return Object.fromEntries(names.map((n) => [n, counterValue(join(dir, n))]));
}

for (const hierarchy of HIERARCHIES) {
  describe(`a checkpoint covers the subtree, cgroup ${hierarchy}`, { skip: unavailable(hierarchy) }, () => {
    test('a cgroup whose only process is in P/child is checkpointed and restored into P/child', async () => {
      const top = lab.cgroup(hierarchy, 'only-child');
      const child = lab.cgroup(hierarchy, 'only-child/child');
      const dir = lab.tempDir('only-child');
      lab.spawnIn(child, workload('counter-tree.pl'), [dir, '0']);
      const [pid] = await lab.waitForProcesses(child, 1);
      await waitForCount(join(dir, 'root'), 2);
      assert.deepEqual(lab.pidsOf(top), [], 'P itself holds nothing');

      const checkpointer = checkpointerIn(lab);
      const summary = await checkpointer.checkpoint(refOf(top), { after: 'killed' });
      assert.equal(summary.processes, 1);
      assert.equal(pidAlive(pid), false, 'killed by --after killed');
      const manifest = checkpointer.show(summary.id);
      assert.deepEqual(
        manifest.trees.map((t) => t.processes.map((p) => [p.pid, p.cgroup])),
        [[[pid, 'child']]],
      );
      assert.deepEqual(manifest.subCgroups, ['child']);
      const frozenAt = valuesOf(dir, ['root']);

      rmdirSync(child.dir);
      const restored = await checkpointer.restore(summary.id);
      assert.deepEqual([...restored.pids], [pid]);
      assert.deepEqual(lab.pidsOf(child), [pid], 'back in P/child, made again');
      assert.deepEqual(lab.pidsOf(top), []);
      await countingOn(dir, ['root'], frozenAt);
    });

    test('processes in P, P/a, P/a/b and P/c: --after killed, restored each in its own sub-cgroup, in place and into a new cgroup', async () => {
      const subs = ['', 'a', 'a/b', 'c', 'd'] as const;
      const cgroups = Object.fromEntries(subs.map((s) => [s, lab.cgroup(hierarchy, s ? `tree/${s}` : 'tree')])) as Record<
        string,
        TestCgroup
      >;
      // One tree rooted in P with a child in P/a and one in P/a/b; a second tree only in P/c; P/d empty.
      const dir = lab.tempDir('tree');
      lab.spawnIn(cgroups[''], workload('counter-tree.pl'), [dir, '2']);
      const pids = await lab.waitForProcesses(cgroups[''], 3);
      await waitForCount(join(dir, 'child-2'), 2);
      const root = pids.find((pid) => !pids.includes(readProcStat(pid)!.ppid))!;
      const [first, second] = pids.filter((pid) => pid !== root).sort((x, y) => x - y);
      writeFileSync(join(cgroups.a.dir, 'cgroup.procs'), String(first));
      writeFileSync(join(cgroups['a/b'].dir, 'cgroup.procs'), String(second));
      const cDir = lab.tempDir('tree-c');
      lab.spawnIn(cgroups.c, workload('counter-tree.pl'), [cDir, '0']);
      const [lone] = await lab.waitForProcesses(cgroups.c, 1);
      await waitForCount(join(cDir, 'root'), 2);
      const expected = new Map<number, string>([
        [root, ''],
        [first, 'a'],
        [second, 'a/b'],
        [lone, 'c'],
      ]);
      assert.deepEqual(placement(cgroups), expected);
      const names = ['root', 'child-1', 'child-2'];

      const checkpointer = checkpointerIn(lab);
      const summary = await checkpointer.checkpoint(refOf(cgroups['']), { after: 'killed' });
      assert.equal(summary.trees, 2);
      assert.equal(summary.processes, 4);
      assert.equal(summary.finalState, 'EMPTY');
      for (const pid of expected.keys()) assert.equal(pidAlive(pid), false, `pid ${pid} was killed with the whole subtree`);
      const manifest = checkpointer.show(summary.id);
      assert.deepEqual(
        new Map(manifest.trees.flatMap((t) => t.processes.map((p) => [p.pid, p.cgroup!] as [number, string]))),
        expected,
        'each process recorded with its sub-cgroup',
      );
      assert.deepEqual(manifest.subCgroups, ['a', 'c', 'd', 'a/b'], 'every sub-cgroup, parents first');
      const frozenAt = valuesOf(dir, names);
      const cFrozenAt = valuesOf(cDir, ['root']);

      // Every sub-cgroup gone: the restore makes them again.
      for (const sub of ['a/b', 'a', 'c', 'd']) rmdirSync(cgroups[sub].dir);
      const restored = await checkpointer.restore(summary.id);
      assert.deepEqual([...restored.pids].sort(), [...expected.keys()].sort());
      assert.deepEqual(placement(cgroups), expected, 'each process back in its own sub-cgroup');
      assert.ok(existsSync(cgroups.d.dir), 'the empty sub-cgroup is made again too');
      await countingOn(dir, names, frozenAt);
      await countingOn(cDir, ['root'], cFrozenAt);

      // Into another cgroup: the same layout below it (per tree, CRIU's --cgroup-root points at the
      // root's own sub-cgroup of the target). P2 and P2/a exist, the rest is made.
      const again = await checkpointer.checkpoint(refOf(cgroups['']), { after: 'killed' });
      const elsewhere = Object.fromEntries(subs.map((s) => [s, lab.cgroup(hierarchy, s ? `moved/${s}` : 'moved')])) as Record<
        string,
        TestCgroup
      >;
      for (const sub of ['a/b', 'c', 'd']) rmdirSync(elsewhere[sub].dir);
      const moved = await checkpointer.restore(again.id, { cgroup: elsewhere[''].path });
      assert.equal(moved.cgroup, elsewhere[''].path);
      assert.deepEqual(placement(elsewhere), expected, 'each process in its own sub-cgroup of the new cgroup');
      assert.deepEqual(placement(cgroups), new Map(), 'nothing left in the old one');
      await countingOn(dir, names, valuesOf(dir, names));
    });

    test('a tree rooted in P/a with a child in P itself comes back the same way, in place and into a new cgroup', async () => {
      const top = lab.cgroup(hierarchy, 'upward');
      const a = lab.cgroup(hierarchy, 'upward/a');
      const dir = lab.tempDir('upward');
      lab.spawnIn(a, workload('counter-tree.pl'), [dir, '1']);
      const pids = await lab.waitForProcesses(a, 2);
      await waitForCount(join(dir, 'child-1'), 2);
      const root = pids.find((pid) => !pids.includes(readProcStat(pid)!.ppid))!;
      const child = pids.find((pid) => pid !== root)!;
      writeFileSync(join(top.dir, 'cgroup.procs'), String(child));
      const expected = new Map<number, string>([
        [root, 'a'],
        [child, ''],
      ]);
      assert.deepEqual(placement({ '': top, a }), expected);
      const names = ['root', 'child-1'];

      const checkpointer = checkpointerIn(lab);
      const summary = await checkpointer.checkpoint(refOf(top), { after: 'killed' });
      assert.equal(summary.trees, 1);
      await checkpointer.restore(summary.id);
      assert.deepEqual(placement({ '': top, a }), expected, 'in place');
      await countingOn(dir, names, valuesOf(dir, names));

      const again = await checkpointer.checkpoint(refOf(top), { after: 'killed' });
      const target = { '': lab.cgroup(hierarchy, 'upward-moved'), a: lab.cgroup(hierarchy, 'upward-moved/a') };
      rmdirSync(target.a.dir);
      await checkpointer.restore(again.id, { cgroup: target[''].path });
      assert.deepEqual(placement(target), expected, 'into a new cgroup');
      assert.deepEqual(placement({ '': top, a }), new Map());
      await countingOn(dir, names, valuesOf(dir, names));
    });

    test('a sub-cgroup frozen on its own is refused before anything is touched, naming it', async () => {
      const top = lab.cgroup(hierarchy, 'self-frozen');
      const below = lab.cgroup(hierarchy, 'self-frozen/below');
      lab.spawnIn(top, 'sleep', ['100000']);
      lab.spawnIn(below, 'sleep', ['100000']);
      await lab.waitForProcesses(below, 1);
      const stateFile = join(below.dir, hierarchy === 'v1' ? 'freezer.state' : 'cgroup.freeze');
      writeFileSync(stateFile, hierarchy === 'v1' ? 'FROZEN' : '1');
      try {
        const checkpointer = checkpointerIn(lab);
        await assert.rejects(
          checkpointer.checkpoint(refOf(top), { after: 'killed' }),
          rejectsWith('EBUSY', new RegExp(`${below.path} below it is frozen on its own.*thaw ${below.path} first`)),
        );
        assert.equal(lab.pidsOf(top).length + lab.pidsOf(below).length, 2, 'nothing was killed');
        assert.deepEqual(checkpointer.list(), [], 'no image, not even a failed one');
      } finally {
        writeFileSync(stateFile, hierarchy === 'v1' ? 'THAWED' : '0');
      }
    });

    test('a subtree with no process anywhere is ESRCH', async () => {
      const top = lab.cgroup(hierarchy, 'empty');
      lab.cgroup(hierarchy, 'empty/below');
      await assert.rejects(
        checkpointerIn(lab).checkpoint(refOf(top)),
        rejectsWith('ESRCH', /has no processes, nor has any cgroup below it/),
      );
    });
  });
}
