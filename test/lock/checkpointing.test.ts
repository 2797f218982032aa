// CHECKPOINTING in one process, on real v1 and v2 cgroups with real workloads (docs/freezer.md,
// rules 1, 2, 4 and 5): entered only from FROZEN, refusing every change while held, ending in FROZEN, and
// reporting any moment the cgroup was not frozen outside CRIU's own window.

import { test, describe, after } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import type { Hierarchy } from '../../src/cgroup/index.js';
import { isAgentError } from '../../src/errors/index.js';
import { CgroupControl, type LockHolder } from '../../src/lock/index.js';
import { HIERARCHIES, Lab, processState, sleepSync, unavailable, workload, type TestCgroup } from '../helpers/lab.js';
import {
  beginCheckpoint,
  busy,
  flockFree,
  kernelState,
  makeControl,
  refOf,
  sleep,
  waitForCounter,
  waitForKernel,
  writeKernel,
} from './helpers.js';

const lab = new Lab('lock-ckpt');
after(() => lab.cleanup());

async function workloadCgroup(hierarchy: Hierarchy, name: string): Promise<{ cgroup: TestCgroup; counter: string; pids: number[] }> {
  const cgroup = lab.cgroup(hierarchy, name);
  const counter = join(lab.tempDir('counter'), 'count');
  lab.spawnIn(cgroup, 'sleep', ['100000']);
  lab.spawnIn(cgroup, workload('counter.sh'), [counter]);
  const pids = await lab.waitForProcesses(cgroup, 2);
  await waitForCounter(counter);
  return { cgroup, counter, pids };
}

const SINCE = String.raw`since \d\d:\d\d:\d\d`;

for (const hierarchy of HIERARCHIES) {
  describe(`CHECKPOINTING on ${hierarchy}`, { skip: unavailable(hierarchy) }, () => {
    test('1. begins only from FROZEN: THAWED is refused with EBUSY, FROZEN is accepted', async () => {
      const { cgroup } = await workloadCgroup(hierarchy, 'only-from-frozen');
      const control = makeControl(lab);
      const ref = refOf(cgroup);

      assert.throws(() => beginCheckpoint(control, ref, { requestId: 'r-thawed' }), busy(/is THAWED, not FROZEN/));
      assert.equal(kernelState(cgroup), 'THAWED', 'the refusal changed nothing');
      assert.equal(control.status(ref).locked, false, 'the refused attempt released its lease');
      assert.equal(flockFree(control.lockPath(ref)), true);

      await control.freeze(ref);
      const hold = beginCheckpoint(control, ref, { requestId: 'r-frozen' });
      try {
        assert.equal(control.status(ref).state, 'CHECKPOINTING');
      } finally {
        await hold.end();
        hold.lease.release();
      }
    });

    test('2. while held, freeze, thaw, kill and a second checkpoint fail EBUSY naming the holder and change nothing', async () => {
      const { cgroup, counter, pids } = await workloadCgroup(hierarchy, 'held');
      const control = makeControl(lab);
      // A second CgroupControl on the same run directory, as agentctl in direct mode would make.
      const direct = new CgroupControl({ runDir: control.runDir });
      const ref = refOf(cgroup);
      await control.freeze(ref);
      const hold = beginCheckpoint(control, ref, { requestId: '7f3a' });
      try {
        const frozenAt = readFileSync(counter, 'utf8');
        const holder = new RegExp(`cgroup ${hierarchy}:${cgroup.path} is CHECKPOINTING \\(request 7f3a, ${SINCE}\\)$`);
        await assert.rejects(control.thaw(ref, { requestId: 'b1' }), busy(holder));
        await assert.rejects(control.freeze(ref, { requestId: 'b2' }), busy(holder));
        assert.throws(() => beginCheckpoint(control, ref, { requestId: 'b3' }), busy(holder));
        assert.throws(() => hold.lease.beginCheckpoint(), busy(holder), 'not even the holder can nest a checkpoint');
        assert.throws(() => control.lease(ref, { requestId: 'b4', operation: 'kill' }), busy(holder));
        await assert.rejects(direct.thaw(ref, { requestId: 'b5' }), busy(holder));
        assert.throws(
          () => beginCheckpoint(direct, ref, { requestId: 'b6' }),
          (err: unknown) => {
            assert.ok(isAgentError(err, 'EBUSY'));
            const recorded = err.details?.holder as LockHolder;
            assert.deepEqual(
              [recorded.pid, recorded.requestId, recorded.phase],
              [process.pid, '7f3a', 'checkpointing'],
              'the whole record travels with the error',
            );
            assert.equal(err.details?.lockFile, control.lockPath(ref));
            return true;
          },
        );

        assert.equal(kernelState(cgroup), 'FROZEN');
        sleepSync(100);
        assert.equal(readFileSync(counter, 'utf8'), frozenAt, 'the counter did not move');
        for (const pid of pids) assert.notEqual(processState(pid), 'R', `pid ${pid} is still stopped`);

        const status = control.status(ref);
        assert.equal(status.state, 'CHECKPOINTING');
        assert.equal(status.kernelState, 'FROZEN');
        assert.equal(status.locked, true);
        assert.equal(status.holder?.requestId, '7f3a');
        assert.equal(status.holder?.operation, 'checkpoint');
        assert.equal(status.holder?.phase, 'checkpointing');
        assert.equal(status.holder?.pid, process.pid);
        assert.equal(status.holder?.cgroup, cgroup.path);
        assert.equal(status.holder?.hierarchy, hierarchy);
        assert.ok(Math.abs(Date.parse(status.holder!.since) - Date.now()) < 60_000);
        assert.equal(status.cgroup, ref.path);
        assert.equal(status.path, ref.dir);
        const consistency = await hold.end();
        assert.deepEqual(consistency, { consistent: true, breaches: [], finalState: 'FROZEN' });
      } finally {
        hold.lease.release();
      }
      // The holder's own status() probes never disturbed it, and nothing is left held.
      assert.equal(control.status(ref).locked, false);
      await control.thaw(ref);
      assert.equal(kernelState(cgroup), 'THAWED');
    });

    test('4. end() returns the state to FROZEN (no CHECKPOINTED); release frees the lock', async () => {
      const { cgroup } = await workloadCgroup(hierarchy, 'end');
      const control = makeControl(lab);
      const ref = refOf(cgroup);
      await control.freeze(ref);
      const hold = beginCheckpoint(control, ref, { requestId: 'e1' });
      const lockFile = control.lockPath(ref);
      try {
        assert.equal(control.status(ref).state, 'CHECKPOINTING');
        const result = await hold.end();
        assert.equal(result.consistent, true);
        assert.equal(await hold.end(), result, 'end() is idempotent');
        const after = control.status(ref);
        // Still CHECKPOINTING until the lease is released (docs/lock.md): every change is still
        // refused with EBUSY, so the state must not say FROZEN as if one could thaw it.
        assert.equal(after.state, 'CHECKPOINTING');
        assert.equal(after.kernelState, 'FROZEN');
        assert.equal(after.locked, true, 'the lease stays held for the caller to apply its policy');
        assert.equal(after.holder?.phase, 'checkpoint-ended');
        assert.throws(
          () => beginCheckpoint(control, ref, { requestId: 'e2' }),
          busy(/is CHECKPOINTING \(request e1, since \d\d:\d\d:\d\d; its image is being checksummed and published\)$/),
        );
        assert.equal(flockFree(lockFile), false);
      } finally {
        hold.lease.release();
      }
      hold.lease.release(); // idempotent
      const released = control.status(ref);
      assert.equal(released.state, 'FROZEN');
      assert.equal(released.locked, false);
      assert.equal(released.holder, undefined);
      assert.equal(flockFree(lockFile), true);
      assert.deepEqual(control.staleLocks(), [], 'a released lock is not stale');
      // The lock file stays (marked finished) and is harmless: the next checkpoint takes it.
      const again = beginCheckpoint(control, ref, { requestId: 'e3' });
      await again.end();
      again.lease.release();
    });

    test("6. a thaw behind agentd's back outside CRIU's window is a breach; the same inside it is not", async () => {
      const { cgroup } = await workloadCgroup(hierarchy, 'breach');
      const control = makeControl(lab);
      const ref = refOf(cgroup);
      await control.freeze(ref);

      // Outside the window: thawed for ~60 ms, then frozen again before end(), so only the watch can tell.
      const outside = beginCheckpoint(control, ref, { requestId: 'w1' });
      try {
        writeKernel(cgroup, 'THAWED');
        await sleep(60);
        writeKernel(cgroup, 'FROZEN');
        await waitForKernel(cgroup, 'FROZEN');
        const result = await outside.end();
        assert.equal(result.consistent, false);
        assert.equal(result.finalState, 'FROZEN');
        assert.ok(result.breaches.length >= 1, 'the watch saw the thaw');
        assert.equal(result.breaches[0].observed, 'THAWED');
        assert.ok(Math.abs(Date.parse(result.breaches[0].at) - Date.now()) < 10_000);
      } finally {
        outside.lease.release();
      }

      // Inside the window: the same writes are CRIU's own.
      const inside = beginCheckpoint(control, ref, { requestId: 'w2' });
      try {
        const value = await inside.criuWindow(async () => {
          writeKernel(cgroup, 'THAWED');
          await sleep(60);
          writeKernel(cgroup, 'FROZEN');
          return 'dumped';
        });
        assert.equal(value, 'dumped', 'criuWindow returns what fn returns');
        assert.equal(kernelState(cgroup), 'FROZEN');
        assert.deepEqual(await inside.end(), { consistent: true, breaches: [], finalState: 'FROZEN' });
      } finally {
        inside.lease.release();
      }

      // Left thawed at the end: end() itself sees it, reports it, and puts the cgroup back to FROZEN.
      const left = beginCheckpoint(control, ref, { requestId: 'w3' });
      try {
        await left.criuWindow(async () => writeKernel(cgroup, 'THAWED'));
        const result = await left.end();
        assert.equal(result.consistent, false);
        assert.equal(result.breaches.at(-1)?.observed, 'THAWED');
        assert.equal(result.finalState, 'FROZEN');
        assert.equal(kernelState(cgroup), 'FROZEN');
        const status = control.status(ref);
        // The kernel is FROZEN again; the cgroup reads CHECKPOINTING until the lease is released.
        assert.deepEqual([status.state, status.kernelState], ['CHECKPOINTING', 'FROZEN']);
      } finally {
        left.lease.release();
      }
      assert.equal(control.status(ref).state, 'FROZEN', 'released: the kernel state again');
    });

    test("6b. a cgroup left THAWED and empty (CRIU's default mode kills the tasks) is no breach", async () => {
      const cgroup = lab.cgroup(hierarchy, 'emptied');
      lab.spawnIn(cgroup, 'sleep', ['100000']);
      await lab.waitForProcesses(cgroup, 1);
      const control = makeControl(lab);
      const ref = refOf(cgroup);
      await control.freeze(ref);
      const hold = beginCheckpoint(control, ref, { requestId: 'k1' });
      try {
        await hold.criuWindow(async () => {
          await hold.lease.freezer.killAll();
        });
        await sleep(30); // let the watch look at the THAWED, empty cgroup
        assert.deepEqual(await hold.end(), { consistent: true, breaches: [], finalState: 'FROZEN' });
      } finally {
        hold.lease.release();
      }
    });
  });
}
