// systemd ending agentd.service in the middle of a dump: `systemctl stop`, `systemctl restart`,
// `systemctl kill -s KILL` and a watchdog timeout of a SIGSTOPped agent, each at the moment CRIU
// holds the workload's tasks under ptrace (the moment a kill of CRIU can kill them,
// docs/criu-faults.md). What must hold every time: CRIU is not in agentd.service's cgroup (it runs
// in a transient scope of its own, src/systemd/scope.ts), every process of the workload is alive
// with its memory intact, no CRIU is left, the cgroup's lock is free, the cgroup is in its prior
// state, and agentd.service runs again. Real systemd (PID 1), real CRIU, the machine's own
// agentd.service as `npm run setup` installed it; skipped elsewhere, saying why.

import { test, describe, after, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { CRIU_SCOPE_PREFIX } from '../../src/systemd/index.js';
import { Lab, REPO_ROOT, anyHierarchy, pidAlive, processState, waitUntil, type TestCgroup } from '../helpers/lab.js';
import {
  api,
  cgroupLines,
  criuProcesses,
  journal,
  mainPid,
  run,
  show,
  systemctl,
  systemdSkip,
  tracerOf,
  waitForNewAgent,
  type Answer,
} from './system-agent.js';

const lab = new Lab('systemd-kill');
const SKIP = systemdSkip();
const PREFIX = `agentd-kill-${process.pid}`;
// 16 MiB of pattern (about 50 MB of perl): a dump of several seconds under emulation, so the
// action below lands while CRIU still holds the tasks, which each test also checks.
const MIB = 16;
const DROP_IN_DIR = '/run/systemd/system/agentd.service.d';
const DROP_IN = join(DROP_IN_DIR, `zz-${PREFIX}-watchdog.conf`);

after(async () => {
  if (!SKIP) {
    if (existsSync(DROP_IN)) {
      rmSync(DROP_IN, { force: true });
      systemctl('daemon-reload');
      systemctl('restart', 'agentd.service');
    }
    systemctl('start', 'agentd.socket', 'agentd.service');
  }
  await lab.cleanup();
});

interface Workload {
  readonly cg: TestCgroup;
  readonly hierarchy: 'v1' | 'v2';
  readonly pids: readonly number[];
  readonly result: string;
}

async function startWorkload(name: string): Promise<Workload> {
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
async function checkpointUntilHeld(w: Workload, requestId: string): Promise<{ criu: number; outcome: Promise<Answer | Error> }> {
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
async function assertIntact(w: Workload, prior: 'THAWED' | 'FROZEN'): Promise<void> {
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
async function assertStoppedByTheRule(outcome: Promise<Answer | Error>, t: TestContext): Promise<void> {
  const answer = await outcome;
  assert.ok(!(answer instanceof Error), `the checkpoint request was answered: ${String(answer)}`);
  const error = (answer.body as { error?: { code?: string; message?: string } }).error;
  assert.equal(error?.code, 'EINTR', JSON.stringify(answer.body));
  assert.match(error?.message ?? '', /held the tasks it dumps|killed it while it held no task/);
  t.diagnostic(error?.message ?? '');
}

/** What journald holds for agentd.service since SINCE, systemd's own lines about the unit included, as text. */
function unitMessages(since: string): string {
  return run('journalctl', ['-u', 'agentd.service', '--since', since, '-o', 'cat', '--no-pager']).stdout;
}

/** Waits for the journal to show that agent PID's recovery put the workload's cgroup back. */
async function waitForRecovery(pid: number, w: Workload): Promise<void> {
  await waitUntil(
    `agent ${pid} to log its recovery of ${w.cg.path}`,
    () =>
      journal([`_PID=${pid}`]).some(
        (r) => /recovered a cgroup an interrupted checkpoint left/.test(r.MESSAGE) && JSON.stringify(r).includes(w.cg.path),
      ),
    30_000,
  );
}

describe('systemd ends agentd.service during a dump (systemd as PID 1)', { skip: SKIP }, () => {
  test('systemctl stop: agentd stops CRIU by the stop rule, puts the cgroup back and exits 0; nothing is harmed', async (t) => {
    const w = await startWorkload('stop');
    const { outcome } = await checkpointUntilHeld(w, `${PREFIX}-stop`);
    const stop = systemctl('stop', 'agentd.service');
    assert.equal(stop.status, 0, stop.stderr);
    const s = show('agentd.service', 'ActiveState', 'Result', 'ExecMainStatus');
    assert.equal(s.get('ActiveState'), 'inactive');
    assert.equal(s.get('Result'), 'success', 'agentd ended by itself, not by systemd SIGKILL');
    assert.equal(s.get('ExecMainStatus'), '0');
    await assertStoppedByTheRule(outcome, t);
    assert.equal(systemctl('start', 'agentd.service').status, 0);
    await assertIntact(w, 'THAWED');
  });

  test('systemctl restart: the same, and the new agent serves', async (t) => {
    const w = await startWorkload('restart');
    const before = mainPid();
    const { outcome } = await checkpointUntilHeld(w, `${PREFIX}-restart`);
    const restart = systemctl('restart', 'agentd.service');
    assert.equal(restart.status, 0, restart.stderr);
    await assertStoppedByTheRule(outcome, t);
    await waitForNewAgent(before);
    await assertIntact(w, 'THAWED');
  });

  test('systemctl kill -s KILL: CRIU, in its own scope, ends its dump; systemd restarts agentd, which puts the cgroup back', async (t) => {
    const w = await startWorkload('kill');
    const before = mainPid();
    const restarts = Number(show('agentd.service', 'NRestarts').get('NRestarts'));
    const { criu, outcome } = await checkpointUntilHeld(w, `${PREFIX}-kill`);
    const kill = systemctl('kill', '-s', 'KILL', 'agentd.service');
    assert.equal(kill.status, 0, kill.stderr);
    // CRIU was not in the cgroup systemd just killed whole (checkpointUntilHeld): it goes on with its dump.
    t.diagnostic(`CRIU ${criu} ${pidAlive(criu) ? 'still dumps' : 'had ended'} right after the kill`);
    assert.ok((await outcome) instanceof Error, 'the request died with its agent');
    const agent = await waitForNewAgent(before);
    assert.equal(Number(show('agentd.service', 'NRestarts').get('NRestarts')), restarts + 1, 'Restart=on-failure restarted it');
    await assertIntact(w, 'THAWED');
    await waitForRecovery(agent, w);
  });

  test('watchdog: a SIGSTOPped agent holding a cgroup frozen for a checkpoint is killed and restarted; the cgroup goes back to FROZEN, every process alive', async () => {
    // A test drop-in shortens WatchdogSec (the unit's is 60 s); TimeoutAbortSec (the unit's) then
    // bounds how long systemd waits for the SIGABRT a stopped process cannot act on before SIGKILL.
    mkdirSync(DROP_IN_DIR, { recursive: true });
    writeFileSync(DROP_IN, '[Service]\nWatchdogSec=8s\n');
    assert.equal(systemctl('daemon-reload').status, 0);
    const previous = mainPid();
    assert.equal(systemctl('restart', 'agentd.service').status, 0);
    const before = await waitForNewAgent(previous);
    assert.equal(show('agentd.service', 'WatchdogUSec').get('WatchdogUSec'), '8s');

    const w = await startWorkload('watchdog');
    const frozen = await api('POST', '/v1/cgroups/freeze', { cgroup: w.cg.path, hierarchy: w.hierarchy });
    assert.equal(frozen.status, 200, JSON.stringify(frozen.body));
    const since = `@${Math.floor(Date.now() / 1000) - 1}`;
    const { outcome } = await checkpointUntilHeld(w, `${PREFIX}-watchdog`);
    process.kill(before, 'SIGSTOP');
    const agent = await waitForNewAgent(before);
    assert.ok((await outcome) instanceof Error, 'the request died with its agent');
    assert.match(unitMessages(since), /agentd\.service: Watchdog timeout/, 'systemd killed it for its watchdog');
    await assertIntact(w, 'FROZEN');
    await waitForRecovery(agent, w);

    rmSync(DROP_IN, { force: true });
    assert.equal(systemctl('daemon-reload').status, 0);
    assert.equal(systemctl('restart', 'agentd.service').status, 0);
  });
});
