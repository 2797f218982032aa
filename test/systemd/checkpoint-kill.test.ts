// systemd killing agentd.service in the middle of a dump: `systemctl kill -s KILL` and a watchdog
// timeout of a SIGSTOPped agent, each at the moment CRIU holds the workload's tasks under ptrace
// (the moment a kill of CRIU can kill them, docs/criu-faults.md). What must hold: CRIU is not in
// agentd.service's cgroup (a transient scope of its own, src/systemd/scope.ts), so it ends its dump;
// systemd restarts agentd and the new agent's recovery puts the cgroup back in its prior state;
// every process of the workload is alive with its memory intact, no CRIU is left, the lock is free.
// The stops are checkpoint-stop.test.ts. Real systemd (PID 1), real CRIU, the machine's own
// agentd.service as `npm run setup` installed it; skipped elsewhere, saying why.

import { test, describe, after } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, mkdirSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { Lab, pidAlive } from '../helpers/lab.js';
import { assertIntact, checkpointUntilHeld, startWorkload, unitMessages, waitForRecovery } from './checkpoint-workload.js';
import { api, mainPid, show, systemctl, systemdSkip, waitForNewAgent } from './system-agent.js';

const lab = new Lab('systemd-kill');
const SKIP = systemdSkip();
const PREFIX = `agentd-kill-${process.pid}`;
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

describe('systemd kills agentd.service during a dump (systemd as PID 1)', { skip: SKIP }, () => {
  test('systemctl kill -s KILL: CRIU, in its own scope, ends its dump; systemd restarts agentd, which puts the cgroup back', async (t) => {
    const w = await startWorkload(lab, 'kill');
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
    await assertIntact(lab, w, 'THAWED');
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

    const w = await startWorkload(lab, 'watchdog');
    const frozen = await api('POST', '/v1/cgroups/freeze', { cgroup: w.cg.path, hierarchy: w.hierarchy });
    assert.equal(frozen.status, 200, JSON.stringify(frozen.body));
    const since = `@${Math.floor(Date.now() / 1000) - 1}`;
    const { outcome } = await checkpointUntilHeld(w, `${PREFIX}-watchdog`);
    process.kill(before, 'SIGSTOP');
    const agent = await waitForNewAgent(before);
    assert.ok((await outcome) instanceof Error, 'the request died with its agent');
    assert.match(unitMessages(since), /agentd\.service: Watchdog timeout/, 'systemd killed it for its watchdog');
    await assertIntact(lab, w, 'FROZEN');
    await waitForRecovery(agent, w);

    rmSync(DROP_IN, { force: true });
    assert.equal(systemctl('daemon-reload').status, 0);
    assert.equal(systemctl('restart', 'agentd.service').status, 0);
  });
});
