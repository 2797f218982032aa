// systemd stopping agentd.service in the middle of a dump: `systemctl stop` and `systemctl restart`
// at the moment CRIU holds the workload's tasks under ptrace (the moment a kill of CRIU can kill
// them, docs/criu-faults.md). What must hold: CRIU is not in agentd.service's cgroup (a transient
// scope of its own, src/systemd/scope.ts), agentd stops it by the stop rule and exits 0, every
// process of the workload is alive with its memory intact, no CRIU is left, the lock is free, the
// cgroup is in its prior state. The kills are checkpoint-kill.test.ts (two files: each stays within
// the test runner's per-file limit in a loaded guest). Real systemd (PID 1), real CRIU, the
// machine's own agentd.service as `npm run setup` installed it; skipped elsewhere, saying why.

import { test, describe, after } from 'node:test';
import assert from 'node:assert/strict';
import { Lab } from '../helpers/lab.js';
import { assertIntact, assertStoppedByTheRule, checkpointUntilHeld, startWorkload } from './checkpoint-workload.js';
import { mainPid, show, systemctl, systemdSkip, waitForNewAgent } from './system-agent.js';

const lab = new Lab('systemd-stop');
const SKIP = systemdSkip();
const PREFIX = `agentd-stop-${process.pid}`;

after(async () => {
  if (!SKIP) systemctl('start', 'agentd.socket', 'agentd.service');
  await lab.cleanup();
});

describe('systemd stops agentd.service during a dump (systemd as PID 1)', { skip: SKIP }, () => {
  test('systemctl stop: agentd stops CRIU by the stop rule, puts the cgroup back and exits 0; nothing is harmed', async (t) => {
    const w = await startWorkload(lab, 'stop');
    const { outcome } = await checkpointUntilHeld(w, `${PREFIX}-stop`);
    const stop = systemctl('stop', 'agentd.service');
    assert.equal(stop.status, 0, stop.stderr);
    const s = show('agentd.service', 'ActiveState', 'Result', 'ExecMainStatus');
    assert.equal(s.get('ActiveState'), 'inactive');
    assert.equal(s.get('Result'), 'success', 'agentd ended by itself, not by systemd SIGKILL');
    assert.equal(s.get('ExecMainStatus'), '0');
    await assertStoppedByTheRule(outcome, t);
    assert.equal(systemctl('start', 'agentd.service').status, 0);
    await assertIntact(lab, w, 'THAWED');
  });

  test('systemctl restart: the same, and the new agent serves', async (t) => {
    const w = await startWorkload(lab, 'restart');
    const before = mainPid();
    const { outcome } = await checkpointUntilHeld(w, `${PREFIX}-restart`);
    const restart = systemctl('restart', 'agentd.service');
    assert.equal(restart.status, 0, restart.stderr);
    await assertStoppedByTheRule(outcome, t);
    await waitForNewAgent(before);
    await assertIntact(lab, w, 'THAWED');
  });
});
