// The CHECKPOINTING lock covers the subtree (docs/lock.md, "Subtrees"), on real v1 and v2 cgroups:
// while P is CHECKPOINTING, a freeze, thaw, kill or checkpoint of P/a (and of P/a/b) gets EBUSY
// naming P; while P/a is CHECKPOINTING, a checkpoint of P (and a thaw of P) gets EBUSY naming P/a;
// a checkpoint of P is refused while a tool holds P/a's lock file with flock(1); and once the hold
// ends, everything works again. The holds are taken as a checkpoint takes them, without CRIU.

import { test, describe, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { existsSync, readdirSync } from 'node:fs';
import { join } from 'node:path';
import type { Hierarchy } from '../../src/cgroup/index.js';
import { HIERARCHIES, Lab, unavailable, waitUntil, type TestCgroup } from '../helpers/lab.js';
import { CgroupControl, type CgroupLease, type CheckpointHold } from '../../src/lock/index.js';
import { beginCheckpoint, busy, kernelState, makeControl, refOf } from './helpers.js';

const lab = new Lab('lock-subtree');
after(() => lab.cleanup());

async function nested(hierarchy: Hierarchy, name: string): Promise<{ top: TestCgroup; a: TestCgroup; b: TestCgroup; c: TestCgroup }> {
  const top = lab.cgroup(hierarchy, name);
  const a = lab.cgroup(hierarchy, `${name}/a`);
  const b = lab.cgroup(hierarchy, `${name}/a/b`);
  const c = lab.cgroup(hierarchy, `${name}/c`);
  for (const cgroup of [top, a, b, c]) lab.spawnIn(cgroup, 'sleep', ['100000']);
  for (const cgroup of [top, a, b, c]) await lab.waitForProcesses(cgroup, 1);
  return { top, a, b, c };
}

/** Lock files left in the control's directory: none once every lease is released. */
async function lockFilesOf(control: CgroupControl): Promise<string[]> {
  return existsSync(control.locksDir) ? readdirSync(control.locksDir) : [];
}

for (const hierarchy of HIERARCHIES) {
  describe(`the lock covers the subtree, cgroup ${hierarchy}`, { skip: unavailable(hierarchy) }, () => {
    test('while P is CHECKPOINTING, freeze, thaw, kill and checkpoint of P/a and P/a/b get EBUSY naming P', async () => {
      const { top, a, b, c } = await nested(hierarchy, 'down');
      const control = makeControl(lab);
      await control.freeze(refOf(top));
      const hold = beginCheckpoint(control, refOf(top), { requestId: 'subtree-top' });
      const insideTop = new RegExp(
        `cgroup ${hierarchy}:${top.path}/a(/b)? is inside ${hierarchy}:${top.path}, which is CHECKPOINTING \\(request subtree-top, since`,
      );
      try {
        assert.equal(control.status(refOf(top)).state, 'CHECKPOINTING');
        for (const below of [a, b]) {
          // The kernel says FROZEN (frozen with its parent); the checkpoint of P covers it.
          const status = control.status(refOf(below));
          assert.equal(status.kernelState, 'FROZEN');
          assert.equal(status.state, 'CHECKPOINTING', `${below.path} reads as its ancestor's checkpoint`);
          assert.equal(status.checkpointingAncestor, top.path);
          assert.equal(status.locked, false, 'its own lock is free');
          await assert.rejects(control.thaw(refOf(below)), busy(insideTop));
          await assert.rejects(control.freeze(refOf(below)), busy(insideTop));
          await assert.rejects(control.kill(refOf(below)), busy(insideTop));
          assert.throws(() => beginCheckpoint(control, refOf(below), { requestId: 'subtree-below' }), busy(insideTop));
        }
        assert.throws(() => beginCheckpoint(control, refOf(c), { requestId: 'subtree-c' }), busy(/is inside .* which is CHECKPOINTING/));
        for (const cgroup of [top, a, b, c]) assert.equal(lab.pidsOf(cgroup).length, 1, `the kill of ${cgroup.path} was refused`);
      } finally {
        await hold.end();
        hold.lease.release();
      }
      // Over: the same requests go through, and P/a reads its kernel state again.
      assert.equal(control.status(refOf(a)).state, 'FROZEN');
      assert.equal(control.status(refOf(a)).checkpointingAncestor, undefined);
      await control.thaw(refOf(top));
      await control.freeze(refOf(a));
      await control.thaw(refOf(a));
      await control.freeze(refOf(c));
      const again = beginCheckpoint(control, refOf(c), { requestId: 'subtree-c-after' });
      await again.end();
      again.lease.release();
      await control.thaw(refOf(c));
    });

    test('while P/a is CHECKPOINTING, a checkpoint of P and a thaw of P get EBUSY naming P/a; P/c next to it is free', async () => {
      const { top, a, c } = await nested(hierarchy, 'up');
      const control = makeControl(lab);
      await control.freeze(refOf(a));
      const hold = beginCheckpoint(control, refOf(a), { requestId: 'subtree-a' });
      const belowTop = new RegExp(
        `cgroup ${hierarchy}:${top.path} has ${hierarchy}:${top.path}/a below it, which is CHECKPOINTING \\(request subtree-a, since`,
      );
      try {
        await assert.rejects(control.freeze(refOf(top)), busy(belowTop));
        assert.throws(() => beginCheckpoint(control, refOf(top), { requestId: 'subtree-top' }), busy(belowTop));
        await assert.rejects(control.kill(refOf(top)), busy(belowTop));
        // A sibling is neither above nor below: it goes on as before.
        await control.freeze(refOf(c));
        await control.thaw(refOf(c));
      } finally {
        await hold.end();
        hold.lease.release();
      }
      await control.thaw(refOf(a));
      await control.freeze(refOf(top));
      const again = beginCheckpoint(control, refOf(top), { requestId: 'subtree-top-after' });
      await again.end();
      again.lease.release();
      await control.thaw(refOf(top));
    });

    test('a checkpoint of P is refused while a tool holds the lock of P/a/b with flock(1), and goes on once it lets go', async () => {
      const { top, b } = await nested(hierarchy, 'tool');
      const control = makeControl(lab);
      // agentd makes the locks directory on first use; the tool's lock file sits where agentd's would.
      await control.freeze(refOf(b));
      await control.thaw(refOf(b));
      const lockFile = control.lockPath(refOf(b));
      const tool = spawn('flock', ['-n', lockFile, 'sleep', '100000'], { stdio: 'ignore', detached: true });
      lab.track(tool.pid!);
      await waitUntil('flock(1) to hold the lock', () => existsSync(lockFile) && control.status(refOf(b)).locked);
      try {
        await control.freeze(refOf(top));
        assert.throws(
          () => beginCheckpoint(control, refOf(top), { requestId: 'subtree-tool' }),
          busy(new RegExp(`has ${hierarchy}:${b.path} below it, whose lock .* another process holds`)),
        );
        // A thaw of P is no checkpoint: the tool's lock of P/a/b does not stand in its way.
        await control.thaw(refOf(top));
      } finally {
        process.kill(-tool.pid!, 'SIGKILL');
      }
      await waitUntil('the tool to let go', () => !control.status(refOf(b)).locked);
      await control.freeze(refOf(top));
      const hold = beginCheckpoint(control, refOf(top), { requestId: 'subtree-after-tool' });
      await hold.end();
      hold.lease.release();
      await control.thaw(refOf(top));
    });

    test('a batch freeze is refused, nothing frozen, when a member has a CHECKPOINTING cgroup below or above it', async () => {
      const { top, a, b, c } = await nested(hierarchy, 'batch-held');
      const control = makeControl(lab);
      await control.freeze(refOf(b));
      let hold = beginCheckpoint(control, refOf(b), { requestId: 'batch-below' });
      try {
        // P/a has P/a/b below it: the one pass over the lock directory finds it for the second member.
        await assert.rejects(
          control.freezeAll([refOf(c), refOf(a)]),
          busy(
            new RegExp(
              `failed at ${hierarchy}:${a.path}: cgroup ${hierarchy}:${a.path} has ${hierarchy}:${b.path} below it, which is CHECKPOINTING \\(request batch-below.*nothing was changed`,
            ),
          ),
        );
        assert.deepEqual([kernelState(c), kernelState(a)], ['THAWED', 'THAWED']);
      } finally {
        await hold.end();
        hold.lease.release();
      }
      await control.thaw(refOf(b));
      await control.freeze(refOf(a));
      hold = beginCheckpoint(control, refOf(a), { requestId: 'batch-above' });
      try {
        await assert.rejects(
          control.thawAll([refOf(c), refOf(top), refOf(b)]),
          busy(
            new RegExp(
              `failed at ${hierarchy}:${top.path}: cgroup ${hierarchy}:${top.path} has ${hierarchy}:${a.path} below it, which is CHECKPOINTING \\(request batch-above`,
            ),
          ),
        );
        await assert.rejects(
          control.freezeAll([refOf(c), refOf(b)]),
          busy(
            new RegExp(
              `failed at ${hierarchy}:${b.path}: cgroup ${hierarchy}:${b.path} is inside ${hierarchy}:${a.path}, which is CHECKPOINTING`,
            ),
          ),
        );
        assert.equal(kernelState(c), 'THAWED');
      } finally {
        await hold.end();
        hold.lease.release();
      }
      await control.thaw(refOf(a));
      assert.deepEqual(await lockFilesOf(control), []);
    });

    test("a checkpoint that begins between two leases of a batch is seen by the batch's one guard pass", async () => {
      const { a, b, c } = await nested(hierarchy, 'batch-between');
      const runDir = join(lab.tempDir('run'), 'agentd');
      // A second holder on the same run directory: its own CgroupControl, its own fds, a real flock.
      const other = new CgroupControl({ runDir });
      await other.freeze(refOf(b));
      let hold: CheckpointHold | undefined;
      class Interleaved extends CgroupControl {
        leased: string[] = [];
        protected override batchLease(...args: Parameters<CgroupControl['batchLease']>): CgroupLease {
          const lease = super.batchLease(...args);
          this.leased.push(args[0].path);
          // After the batch's first lease (P/c) and before its second (P/a): a checkpoint of P/a/b,
          // which finds nothing of the batch above or below it yet and so goes ahead.
          if (this.leased.length === 1) hold = beginCheckpoint(other, refOf(b), { requestId: 'between-leases' });
          return lease;
        }
      }
      const control = new Interleaved({ runDir });
      try {
        await assert.rejects(
          control.freezeAll([refOf(c), refOf(a)]),
          busy(
            new RegExp(
              `failed at ${hierarchy}:${a.path}: cgroup ${hierarchy}:${a.path} has ${hierarchy}:${b.path} below it, which is CHECKPOINTING \\(request between-leases.*nothing was changed`,
            ),
          ),
        );
        assert.deepEqual(control.leased, [c.path, a.path], 'both leases were taken, the checkpoint began between them');
        assert.ok(hold, 'the checkpoint of P/a/b began');
        assert.deepEqual([kernelState(c), kernelState(a)], ['THAWED', 'THAWED']);
        assert.equal(other.status(refOf(b)).state, 'CHECKPOINTING');
      } finally {
        if (hold) {
          await hold.end();
          hold.lease.release();
        }
      }
      await other.thaw(refOf(b));
      // With the checkpoint over, the same batch goes through.
      const statuses = await control.freezeAll([refOf(c), refOf(a)]);
      assert.deepEqual(
        statuses.map((s) => s.state),
        ['FROZEN', 'FROZEN'],
      );
      await control.thawAll([refOf(c), refOf(a)]);
    });

    test("a cgroup's status counts its own processes and its subtree's", async () => {
      const { top, a, b } = await nested(hierarchy, 'counts');
      const control = makeControl(lab);
      assert.deepEqual(pick(control.status(refOf(top))), { processes: 1, subtreeProcesses: 4 });
      assert.deepEqual(pick(control.status(refOf(a))), { processes: 1, subtreeProcesses: 2 });
      assert.deepEqual(pick(control.status(refOf(b))), { processes: 1, subtreeProcesses: 1 });
      const frozen = await control.freeze(refOf(top));
      assert.deepEqual(pick(frozen), { processes: 1, subtreeProcesses: 4 }, 'the reply to a freeze counts too');
      await control.thaw(refOf(top));
    });
  });
}

function pick(status: { processes: number; subtreeProcesses: number }) {
  return { processes: status.processes, subtreeProcesses: status.subtreeProcesses };
}
