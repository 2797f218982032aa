// restoreInOrder: several process trees restored one at a time in saved order; a failure stops the
// rest and undoes what was restored.

import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { test } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import fc from 'fast-check';
import { AgentError, isAgentError } from '../../src/errors/index.js';
import { restoreInOrder, type RestoreStep } from '../../src/restart/index.js';
import { newRun } from './helpers.js';

/** Steps that record what happened to them, and check that only one is ever active. */
function recordingSteps(ids: string[], options: { failAt?: string; delayMs?: (id: string) => number; withUndo?: boolean } = {}) {
  const log: string[] = [];
  let active = 0;
  const steps: RestoreStep[] = ids.map((id) => ({
    id,
    restore: async () => {
      active += 1;
      assert.equal(active, 1, `${id} started while another step was active`);
      log.push(`restore ${id}`);
      await sleep(options.delayMs?.(id) ?? 0);
      active -= 1;
      if (id === options.failAt) throw new AgentError('ECRIU', `criu restore of ${id} failed`);
    },
    undo: options.withUndo === false ? undefined : () => void log.push(`undo ${id}`),
  }));
  return { steps, log };
}

test('steps run one at a time in saved order', async () => {
  const { steps, log } = recordingSteps(['t1', 't2', 't3', 't4'], { delayMs: (id) => (id === 't1' ? 30 : 5) });
  const report = await restoreInOrder(steps);
  assert.deepEqual(report.order, ['t1', 't2', 't3', 't4']);
  assert.deepEqual(log, ['restore t1', 'restore t2', 'restore t3', 'restore t4']);
});

test('a failing step: later steps never start, earlier ones are undone last first, the error keeps its code', async () => {
  const { steps, log } = recordingSteps(['t1', 't2', 't3', 't4', 't5'], { failAt: 't3' });
  const err = await restoreInOrder(steps).then(
    () => assert.fail('should have failed'),
    (e: unknown) => e,
  );
  assert.ok(isAgentError(err, 'ECRIU'));
  assert.match(err.message, /^restore failed at step t3 \(3 of 5\): criu restore of t3 failed; undid t2, t1$/);
  assert.deepEqual(err.details, {
    failedStep: 't3',
    restored: ['t1', 't2'],
    undone: ['t2', 't1'],
    undoFailures: [],
    notStarted: ['t4', 't5'],
  });
  assert.deepEqual(log, ['restore t1', 'restore t2', 'restore t3', 'undo t2', 'undo t1']);
});

test('an undo that fails is reported and does not stop the other undos', async () => {
  const { steps, log } = recordingSteps(['t1', 't2', 't3'], { failAt: 't3' });
  steps[1]!.undo = () => {
    throw new Error('kill: no such process');
  };
  const err = await restoreInOrder(steps).catch((e: unknown) => e);
  assert.ok(isAgentError(err, 'ECRIU'));
  assert.match(err.message, /undid t1; could not undo t2 \(undo failed: kill: no such process\)$/);
  assert.deepEqual(log, ['restore t1', 'restore t2', 'restore t3', 'undo t1']);
});

test('interrupted by its AbortSignal: the running step is stopped and waited for, everything restored is undone', async () => {
  const controller = new AbortController();
  const log: string[] = [];
  const steps: RestoreStep[] = ['t1', 't2', 't3'].map((id) => ({
    id,
    restore: async (signal) => {
      log.push(`restore ${id}`);
      if (id !== 't2') return;
      controller.abort();
      // A CRIU call that finishes anyway a moment after the signal: t2 is running, so it gets undone too.
      await sleep(50);
      log.push(`t2 saw abort: ${signal.aborted}`);
    },
    undo: () => void log.push(`undo ${id}`),
  }));
  const err = await restoreInOrder(steps, { signal: controller.signal }).catch((e: unknown) => e);
  assert.ok(isAgentError(err, 'EINTR'));
  assert.match(err.message, /^restore failed at step t3 \(3 of 3\): restore interrupted/);
  assert.deepEqual(log, ['restore t1', 'restore t2', 't2 saw abort: true', 'undo t2', 'undo t1']);
});

test('the overall timeout: ETIMEDOUT, and the step that honours the signal is not counted as restored', async () => {
  const { steps } = recordingSteps(['t1', 't2']);
  const log: string[] = [];
  steps[1] = {
    id: 't2',
    restore: (signal) => new Promise((_, reject) => signal.addEventListener('abort', () => reject(signal.reason))),
    undo: () => void log.push('undo t2'),
  };
  steps[0]!.undo = () => void log.push('undo t1');
  const err = await restoreInOrder(steps, { timeoutMs: 100 }).catch((e: unknown) => e);
  assert.ok(isAgentError(err, 'ETIMEDOUT'));
  assert.deepEqual(log, ['undo t1']);
});

test('malformed steps are rejected before any step runs', async () => {
  const { steps, log } = recordingSteps(['t1', 't2']);
  const cases: unknown[] = [
    [],
    [steps[0], steps[0]],
    [{ id: '', restore: steps[0]!.restore }],
    [{ id: 'x' }],
    [{ id: 'x', restore: steps[0]!.restore, undo: 'kill' }],
    'not an array',
  ];
  for (const bad of cases) {
    await assert.rejects(restoreInOrder(bad as RestoreStep[]), (e: unknown) => isAgentError(e, 'EINVAL'), JSON.stringify(bad));
  }
  await assert.rejects(restoreInOrder(steps, { timeoutMs: -1 }), (e: unknown) => isAgentError(e, 'EINVAL'));
  assert.deepEqual(log, []);
});

test('property: for any steps and any failing step k, exactly steps 1..k start and 1..k-1 are undone in reverse', async () => {
  await fc.assert(
    fc.asyncProperty(
      fc.integer({ min: 1, max: 30 }).chain((n) =>
        fc.record({
          delays: fc.array(fc.integer({ min: 0, max: 3 }), { minLength: n, maxLength: n }),
          failAt: fc.option(fc.integer({ min: 0, max: n - 1 })),
        }),
      ),
      async ({ delays, failAt }) => {
        const ids = delays.map((_, i) => `tree${i}`);
        const failId = failAt === null ? undefined : ids[failAt];
        const { steps, log } = recordingSteps(ids, { failAt: failId, delayMs: (id) => delays[ids.indexOf(id)]! });
        const outcome = await restoreInOrder(steps).catch((e: unknown) => e);
        if (failAt === null) {
          assert.deepEqual(outcome, { order: ids });
          assert.deepEqual(
            log,
            ids.map((id) => `restore ${id}`),
          );
        } else {
          assert.ok(isAgentError(outcome, 'ECRIU'));
          const started = ids.slice(0, failAt + 1).map((id) => `restore ${id}`);
          const undone = ids
            .slice(0, failAt)
            .reverse()
            .map((id) => `undo ${id}`);
          assert.deepEqual(log, [...started, ...undone]);
        }
      },
    ),
    { numRuns: 100 },
  );
});

test('with real processes: a failing tree restore kills the trees restored before it, and starts none after', async (t) => {
  const run = newRun('restore-in-order-processes');
  t.after(() => run.cleanUp());
  const restored = new Map<string, ChildProcess>();
  const attempted: string[] = [];
  // Each "tree" is a long-running process; the third cannot be restored.
  const steps: RestoreStep[] = ['tree-a', 'tree-b', 'tree-c', 'tree-d'].map((id) => ({
    id,
    restore: async () => {
      attempted.push(id);
      if (id === 'tree-c') throw new AgentError('ECRIU', `criu restore of ${id} failed: could not restore pid 4242`);
      const proc = spawn(process.execPath, ['-e', 'setInterval(() => {}, 1000)', id, run.tag], { stdio: 'ignore' });
      run.tracker.add(proc.pid);
      await once(proc, 'spawn');
      restored.set(id, proc);
    },
    undo: async () => {
      const proc = restored.get(id)!;
      const exited = once(proc, 'exit');
      proc.kill('SIGKILL');
      await exited;
    },
  }));

  const err = await restoreInOrder(steps).catch((e: unknown) => e);
  assert.ok(isAgentError(err, 'ECRIU'));
  assert.deepEqual(attempted, ['tree-a', 'tree-b', 'tree-c'], 'tree-d never started');
  assert.deepEqual([...restored.keys()], ['tree-a', 'tree-b']);
  for (const proc of restored.values()) assert.equal(proc.signalCode, 'SIGKILL', `${proc.pid} was killed by its undo`);
  await run.assertNoStrayProcess(2_000);
});
