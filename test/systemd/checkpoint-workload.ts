// What the tests of systemd ending agentd.service during a dump share (checkpoint-stop.test.ts,
// checkpoint-kill.test.ts): a workload that can check its own memory, a checkpoint started and
// caught at the moment CRIU holds the workload, and what must hold afterwards.

import assert from 'node:assert/strict';
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import type { TestContext } from 'node:test';
import { CRIU_SCOPE_PREFIX } from '../../src/systemd/index.js';
import { type Lab, REPO_ROOT, anyHierarchy, pidAlive, processState, waitUntil, type TestCgroup } from '../helpers/lab.js';
import { api, cgroupLines, criuProcesses, journal, run, systemctl, tracerOf, type Answer } from './system-agent.js';

// 16 MiB of pattern (about 50 MB of perl): a dump of several seconds under emulation, so the
// action lands while CRIU still holds the tasks, or soon after.
export const MIB = 16;

export interface Workload {
  readonly cg: TestCgroup;
  readonly hierarchy: 'v1' | 'v2';
  readonly pids: readonly number[];
  readonly result: string;
}

export async function startWorkload(lab: Lab, name: string): Promise<Workload> {
  // Each test starts from a running agent, whatever the one before left.
  assert.equal(systemctl('start', 'agentd.socket', 'agentd.service').status, 0);
  const hierarchy = anyHierarchy();
  const cg = lab.cgroup(hierarchy, name);
  const result = join(lab.tempDir(name), 'result');
  lab.spawnIn(cg, 'perl', [`${REPO_ROOT}/fixtures/workloads/memory-pattern.pl`, String(MIB), result]);
  await waitUntil(
    `${name}'s workload to fill its memory`,
    () => existsSync(result) && readFileSync(result, 'utf8').trim() === 'ready',
    60_000,
  );
  return { cg, hierarchy, pids: lab.pidsOf(cg), result };
}

/**
 * Starts a checkpoint of the workload and returns once CRIU holds its first task under ptrace, with
 * CRIU's pid and the request's outcome to come (an answer, or the error of a connection the agent's
 * end cut).
 */
export async function checkpointUntilHeld(w: Workload, requestId: string): Promise<{ criu: number; outcome: Promise<Answer | Error> }> {
  const outcome = api('POST', '/v1/checkpoints', { cgroup: w.cg.path, hierarchy: w.hierarchy, after: 'prior' }, requestId).catch(
    (err: Error) => err,
  );
  let criu = 0;
  let settled: Answer | Error | undefined;
  void outcome.then((o) => (settled = o));
  await waitUntil(
    'CRIU to hold the workload under ptrace, or the request to end',
    () => (criu = tracerOf(w.pids[0])) !== 0 || settled !== undefined,
    120_000,
  );
  assert.ok(
    criu !== 0,
    `CRIU held the workload before the checkpoint ended: ${settled instanceof Error ? String(settled) : JSON.stringify(settled)}`,
  );
  const lines = cgroupLines(criu);
  assert.ok(!lines.some((l) => l.includes('/agentd.service')), `CRIU ${criu} is out of agentd.service's cgroup: ${lines.join(' | ')}`);
  assert.ok(
    lines.some((l) => l.includes(`/${CRIU_SCOPE_PREFIX}`)),
    `CRIU ${criu} is in a scope of its own: ${lines.join(' | ')}`,
  );
  return { criu, outcome };
}

/** What every test ends on: no CRIU, every process alive and its memory intact, lock free, the cgroup in its prior state. */
export async function assertIntact(lab: Lab, w: Workload, prior: 'THAWED' | 'FROZEN'): Promise<void> {
  await waitUntil('no CRIU to be left', () => criuProcesses().length === 0, 180_000);
  for (const pid of w.pids) assert.ok(pidAlive(pid) && processState(pid) !== 'Z', `workload process ${pid} is alive`);
  const query = `cgroup=${encodeURIComponent(w.cg.path)}&hierarchy=${w.hierarchy}`;
  const status = await api('GET', `/v1/cgroups/state?${query}`);
  assert.equal(status.status, 200, JSON.stringify(status.body));
  assert.equal(status.body.locked, false, 'nobody holds the cgroup lock');
  assert.equal(status.body.state, prior, `the cgroup is back in its prior state ${prior}`);
  if (prior === 'FROZEN') {
    const thawed = await api('POST', '/v1/cgroups/thaw', { cgroup: w.cg.path, hierarchy: w.hierarchy });
    assert.equal(thawed.status, 200, JSON.stringify(thawed.body));
  }
  // The workload checks every byte of its memory against its pattern.
  process.kill(w.pids[0], 'SIGUSR1');
  await waitUntil('the workload to check its memory', () => readFileSync(w.result, 'utf8').trim() !== 'ready', 60_000);
  assert.equal(readFileSync(w.result, 'utf8').trim(), `ok ${MIB}`);
  await lab.killIn(w.cg);
}

/**
 * The aborted checkpoint's answer: EINTR, CRIU stopped by the stop rule (docs/criu-faults.md), the
 * dump discarded. Which of the rule's two safe ends it took depends on where CRIU was when the
 * SIGTERM came (the first guest run: already done with the tasks, so killed "while it held no
 * task"); never a forced kill of a CRIU holding them.
 */
export async function assertStoppedByTheRule(outcome: Promise<Answer | Error>, t: TestContext): Promise<void> {
  const answer = await outcome;
  assert.ok(!(answer instanceof Error), `the checkpoint request was answered: ${String(answer)}`);
  const error = (answer.body as { error?: { code?: string; message?: string } }).error;
  assert.equal(error?.code, 'EINTR', JSON.stringify(answer.body));
  assert.match(error?.message ?? '', /held the tasks it dumps|killed it while it held no task/);
  t.diagnostic(error?.message ?? '');
}

/** What journald holds for agentd.service since SINCE, systemd's own lines about the unit included, as text. */
export function unitMessages(since: string): string {
  return run('journalctl', ['-u', 'agentd.service', '--since', since, '-o', 'cat', '--no-pager']).stdout;
}

/** Waits for the journal to show that agent PID's recovery put the workload's cgroup back. */
export async function waitForRecovery(pid: number, w: Workload): Promise<void> {
  await waitUntil(
    `agent ${pid} to log its recovery of ${w.cg.path}`,
    () =>
      journal([`_PID=${pid}`]).some(
        (r) => /recovered a cgroup an interrupted checkpoint left/.test(r.MESSAGE) && JSON.stringify(r).includes(w.cg.path),
      ),
    30_000,
  );
}
