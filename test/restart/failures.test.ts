// Failure semantics with real processes: whatever goes wrong, the coordinator and every participant
// still waiting are released with the same error, nobody restored after the failure point, and no
// process is left behind. The tree is helpers.smallTree: root(0) -> a(1) -> c(3), d(4); root -> b(2) -> e(5).

import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { readFileSync, writeFileSync } from 'node:fs';
import { createInterface } from 'node:readline';
import { join } from 'node:path';
import { test } from 'node:test';
import { snapshotScript } from '../../fixtures/restart/code-snapshot.js';
import type { CoordinatorOutcome, CoordinatorRun } from '../../fixtures/restart/coordinator-process.js';
import { readOrderLog, type TreeManifest } from '../../fixtures/restart/manifest.js';
import { runTreeRestart, type TreeRestartResult } from '../../fixtures/restart/tree-builder.js';
import type { RestartEvent } from '../../src/restart/index.js';
import { newRun, releasedById, smallTree, startedById, type RunContext } from './helpers.js';

/** Asserts every node except `except` was released with an error of `code`. */
function assertAllReleasedWith(eventsPath: string, manifest: TreeManifest, code: string, except: string[] = []): void {
  const released = releasedById(eventsPath);
  for (const node of manifest.nodes) {
    if (node.parent === null || except.includes(node.id)) continue;
    const outcome = released.get(node.id);
    assert.equal(outcome?.outcome, 'error', `${node.id} should have been released with an error, got ${JSON.stringify(outcome)}`);
    assert.equal(outcome.code, code, `${node.id} released with ${outcome.code}: ${outcome.message}`);
  }
}

async function runInProcess(
  run: RunContext,
  manifest: TreeManifest,
  options: { joinTimeoutMs?: number; timeoutMs?: number; signal?: AbortSignal; onProgress?: (e: RestartEvent) => void } = {},
): Promise<TreeRestartResult> {
  const result = await runTreeRestart(manifest, {
    workDir: run.workDir,
    tag: run.tag,
    joinTimeoutMs: options.joinTimeoutMs ?? 20_000,
    timeoutMs: options.timeoutMs,
    signal: options.signal,
    onProgress: options.onProgress,
    participantTimeoutMs: 30_000,
  });
  await settled(run, result);
  return result;
}

/** Waits until the whole tree has exited, orphans included, so every node has recorded its outcome. */
async function settled(run: RunContext, result: TreeRestartResult): Promise<void> {
  await result.treeExited; // the root's children
  await run.tracker.waitUntilAllExited(30_000); // and any node orphaned by a death (asserted at the end of each test)
}

test('a participant that never joins: ESRCH for the coordinator and every waiting participant', async (t) => {
  const run = newRun('never-joins');
  t.after(() => run.cleanUp());
  const manifest = smallTree({ b: 'never-join' }); // b exists (and spawns e) but never joins
  const started = performance.now();
  const result = await runInProcess(run, manifest, { joinTimeoutMs: 1_500 });

  assert.equal(result.error?.code, 'ESRCH');
  assert.match(result.error.message, /did not join within 1500 ms: b$/);
  assert.deepEqual(result.error.details, { missing: ['b'] });
  assert.ok(performance.now() - started < 15_000, 'released within the join timeout, not left waiting');
  assertAllReleasedWith(result.config.eventsPath, manifest, 'ESRCH', ['b']);
  assert.equal(releasedById(result.config.eventsPath).get('b')?.outcome, 'absent');
  assert.deepEqual(result.orderLog, [], 'nobody restores until everybody has joined');
  await run.assertNoStrayProcess();
});

test('a participant whose process dies before joining: ESRCH at once, not at the join timeout', async (t) => {
  const run = newRun('dies-before-joining');
  t.after(() => run.cleanUp());
  const manifest = smallTree({ a: 'die-before-join' }); // a exits; its children c and d live on as orphans
  let listening = 0;
  const result = await runTreeRestart(manifest, {
    workDir: run.workDir,
    tag: run.tag,
    joinTimeoutMs: 30_000,
    onProgress: (event) => void (event.type === 'listening' && (listening = performance.now())),
  });
  const failed = performance.now();
  await settled(run, result);

  assert.equal(result.error?.code, 'ESRCH');
  assert.match(result.error.message, /participant a \(pid \d+\) is gone before joining/);
  assert.ok(failed - listening < 10_000, `failed ${Math.round(failed - listening)} ms after listening, long before the 30 s join timeout`);
  assertAllReleasedWith(result.config.eventsPath, manifest, 'ESRCH', ['a']);
  assert.deepEqual(result.orderLog, []);
  await run.assertNoStrayProcess();
});

test('a participant SIGKILLed while waiting for its turn: ESRCH for the rest', async (t) => {
  const run = newRun('killed-while-waiting');
  t.after(() => run.cleanUp());
  // a holds the turn (its restore hangs) while the others wait; then b, which has a child e, is killed.
  const manifest = smallTree({ a: 'stall' });
  let victim: number | undefined;
  const result = await runInProcess(run, manifest, {
    onProgress: (event) => {
      if (event.type === 'turn' && event.id === 'a') {
        victim = startedById(join(run.workDir, 'events.jsonl')).get('b')!.pid;
        process.kill(victim, 'SIGKILL');
      }
    },
  });

  assert.ok(victim, 'the victim was killed');
  assert.equal(result.error?.code, 'ESRCH');
  assert.match(result.error.message, new RegExp(`participant b \\(pid ${victim}\\) went away`));
  // Everybody else, including a (interrupted in its restore) and e (orphaned by b's death), is released.
  assertAllReleasedWith(result.config.eventsPath, manifest, 'ESRCH', ['b']);
  assert.equal(releasedById(result.config.eventsPath).has('b'), false, 'b died without a word');
  assert.deepEqual(
    result.orderLog.map((e) => e.id),
    ['root'],
    'nobody after the failure point restored',
  );
  await run.assertNoStrayProcess();
});

test('the coordinator interrupted through its AbortSignal: everybody released with EINTR', async (t) => {
  const run = newRun('abort-signal');
  t.after(() => run.cleanUp());
  // a restores, then b hangs in its restore: a (done, waiting for the end), b (restoring), and c, d, e
  // (waiting for their turn) are each in a different wait when the abort comes.
  const manifest = smallTree({ b: 'stall' });
  const controller = new AbortController();
  const result = await runInProcess(run, manifest, {
    signal: controller.signal,
    onProgress: (event) => {
      if (event.type === 'turn' && event.id === 'b') setTimeout(() => controller.abort('operator cancelled'), 100);
    },
  });

  assert.equal(result.error?.code, 'EINTR');
  assert.match(result.error.message, /interrupted: operator cancelled/);
  assertAllReleasedWith(result.config.eventsPath, manifest, 'EINTR');
  assert.deepEqual(
    result.orderLog.map((e) => e.id),
    ['root', 'a'],
  );
  await run.assertNoStrayProcess();
});

test('the overall timeout: everybody released with ETIMEDOUT', async (t) => {
  const run = newRun('timeout');
  t.after(() => run.cleanUp());
  const manifest = smallTree({ c: 'stall' });
  const result = await runInProcess(run, manifest, { timeoutMs: 2_500 });

  assert.equal(result.error?.code, 'ETIMEDOUT');
  assert.match(result.error.message, /did not finish within 2500 ms/);
  assertAllReleasedWith(result.config.eventsPath, manifest, 'ETIMEDOUT');
  assert.deepEqual(
    result.orderLog.map((e) => e.id),
    ['root', 'a', 'b'],
  );
  await run.assertNoStrayProcess();
});

test("a participant's restore step fails: everybody released with its error", async (t) => {
  const run = newRun('step-fails');
  t.after(() => run.cleanUp());
  const manifest = smallTree({ b: 'fail' });
  const result = await runInProcess(run, manifest);

  assert.equal(result.error?.code, 'ECRIU');
  assert.match(result.error.message, /participant b failed: node b: could not restore its saved state/);
  assertAllReleasedWith(result.config.eventsPath, manifest, 'ECRIU');
  assert.deepEqual(
    result.orderLog.map((e) => e.id),
    ['root', 'a'],
  );
  await run.assertNoStrayProcess();
});

/** Starts a coordinator process for the small tree; resolves its stdout events through onEvent. */
function startCoordinatorProcess(run: RunContext, manifest: TreeManifest, onEvent: (event: RestartEvent, pid: number) => void) {
  const runPath = join(run.workDir, 'run.json');
  const resultPath = join(run.workDir, 'result.json');
  const config: CoordinatorRun = {
    manifest,
    workDir: run.workDir,
    joinTimeoutMs: 20_000,
    participantTimeoutMs: 30_000,
    resultPath,
    nodeScript: snapshotScript('tree-node.js'),
  };
  writeFileSync(runPath, JSON.stringify(config));
  const script = snapshotScript('coordinator-process.js');
  const child = spawn(process.execPath, [script, runPath, run.tag], { stdio: ['ignore', 'pipe', 'inherit'] });
  run.tracker.add(child.pid);
  createInterface({ input: child.stdout! }).on('line', (line) => onEvent(JSON.parse(line) as RestartEvent, child.pid!));
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) =>
    child.once('exit', (code, signal) => resolve({ code, signal })),
  );
  return {
    child,
    exited,
    outcome: () => JSON.parse(readFileSync(resultPath, 'utf8')) as CoordinatorOutcome,
    orderLog: () => readOrderLog(join(run.workDir, 'restore-order.jsonl')),
    eventsPath: join(run.workDir, 'events.jsonl'),
  };
}

test('a real SIGTERM to the coordinator process: everybody released with EINTR', async (t) => {
  const run = newRun('sigterm');
  t.after(() => run.cleanUp());
  const manifest = smallTree({ b: 'stall' });
  const coordinator = startCoordinatorProcess(run, manifest, (event, pid) => {
    if (event.type === 'turn' && event.id === 'b') setTimeout(() => process.kill(pid, 'SIGTERM'), 100);
  });
  const exit = await coordinator.exited;

  assert.deepEqual(exit, { code: 1, signal: null }, 'the coordinator handled SIGTERM, released everybody, and exited');
  const outcome = coordinator.outcome();
  assert.equal(outcome.error?.code, 'EINTR');
  assert.match(outcome.error.message, /interrupted by SIGTERM/);
  assertAllReleasedWith(coordinator.eventsPath, manifest, 'EINTR');
  assert.deepEqual(
    coordinator.orderLog().map((e) => e.id),
    ['root', 'a'],
  );
  // The tree really hung under the coordinator process.
  const started = startedById(coordinator.eventsPath);
  assert.equal(started.get('a')!.ppid, outcome.pid);
  assert.equal(started.get('b')!.ppid, outcome.pid);
  await run.assertNoStrayProcess();
});

test('the coordinator process SIGKILLed: its participants are released with ESRCH', async (t) => {
  const run = newRun('coordinator-killed');
  t.after(() => run.cleanUp());
  const manifest = smallTree({ b: 'stall' });
  const coordinator = startCoordinatorProcess(run, manifest, (event, pid) => {
    if (event.type === 'turn' && event.id === 'b') setTimeout(() => process.kill(pid, 'SIGKILL'), 100);
  });
  const exit = await coordinator.exited;

  assert.equal(exit.signal, 'SIGKILL');
  // Orphaned, the tree notices on its own: every node exits within the wait below, long before its
  // participant timeout (30 s).
  await run.assertNoStrayProcess();
  assertAllReleasedWith(coordinator.eventsPath, manifest, 'ESRCH');
  assert.match(releasedById(coordinator.eventsPath).get('d')!.message!, /the coordinator went away while participant d was waiting/);
});
