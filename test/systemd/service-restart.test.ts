// Checkpointing a service with --after killed (src/systemd/service-restart.ts): systemd starts a
// service with Restart= again once its main process is killed, so agentd refuses that before
// anything changes, and says what to do; a service with Restart=no just ends, and is not started
// again; the runtime drop-in the error suggests makes the checkpoint go through. Under systemd as
// PID 1 only (the test:vm guests); the pure rules run everywhere.

import { test, describe, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdirSync, rmSync, writeFileSync } from 'node:fs';
import { restartsWhenKilled, servicesOf } from '../../src/systemd/index.js';
import { Lab, anyHierarchy, pidAlive, sleepSync, waitUntil } from '../helpers/lab.js';
import { agentctl, run, show, systemctl, systemdSkip, undoMade } from './system-agent.js';

test('restartsWhenKilled: every Restart= but no, on-success and on-watchdog starts a SIGKILLed main process again', () => {
  for (const r of ['always', 'on-failure', 'on-abnormal', 'on-abort']) assert.equal(restartsWhenKilled(r), true, r);
  for (const r of ['no', 'on-success', 'on-watchdog']) assert.equal(restartsWhenKilled(r), false, r);
});

test('servicesOf: the last .service segment of the systemd cgroup, per pid; none for scopes and gone pids', () => {
  const cgroups: Record<number, string> = {
    1: '0::/system.slice/build.service\n',
    2: '4:freezer:/jobs/x\n1:name=systemd:/system.slice/build.service/worker\n',
    3: '0::/user.slice/user-0.slice/session-1.scope\n',
  };
  const found = servicesOf([1, 2, 3, 4], (pid) => cgroups[pid]);
  assert.deepEqual([...found], [['build.service', [1, 2]]]);
});

const SKIP = systemdSkip();

describe('checkpoint --after killed of a service (systemd as PID 1, the system agent)', { skip: SKIP }, () => {
  const lab = new Lab('service-restart');
  const PREFIX = `agentd-test-${process.pid}`;
  const units: string[] = [];
  const dropIns: string[] = [];
  const checkpoints: string[] = [];
  after(async () => {
    for (const dir of dropIns) rmSync(dir, { recursive: true, force: true });
    if (dropIns.length) systemctl('daemon-reload');
    await undoMade(lab, units, checkpoints);
  });

  const hierarchy = SKIP ? 'v2' : anyHierarchy();

  /**
   * A running service with RESTART (its output to nowhere: a journal socket is not dumpable) and the
   * checkpoint target holding its main process: the unit on v2; on v1, where systemd gives units no
   * freezer cgroup, a test cgroup the main process is moved into.
   */
  async function service(name: string, restart: string): Promise<{ unit: string; main: number; target: string[] }> {
    const unit = `${PREFIX}-${name}.service`;
    const r = run('systemd-run', [
      '--quiet',
      `--unit=${unit}`,
      `--property=Restart=${restart}`,
      '--property=RestartSec=1',
      '--property=StandardOutput=null',
      '--property=StandardError=null',
      'perl',
      '-e',
      'sleep 1 while 1',
    ]);
    assert.equal(r.status, 0, r.stderr);
    units.push(unit);
    let main = 0;
    await waitUntil(`${unit} to run`, () => (main = Number(show(unit, 'MainPID').get('MainPID'))) > 0, 60_000);
    if (hierarchy === 'v2') return { unit, main, target: [unit] };
    const cg = lab.cgroup('v1', name);
    writeFileSync(`${cg.dir}/cgroup.procs`, String(main));
    return { unit, main, target: [cg.path, '--hierarchy', 'v1'] };
  }

  test('Restart=always: refused with EBUSY naming the unit and what to do; the service runs on untouched', async () => {
    const { unit, main, target } = await service('again', 'always');
    const r = await agentctl(['--timeout', '300', 'checkpoint', ...target, '--after', 'killed']);
    assert.equal(r.code, 4, r.stderr);
    assert.match(
      r.stderr,
      new RegExp(`EBUSY: .*process ${main} is the main process of ${unit.replace(/\./g, '\\.')}, which has Restart=always`),
    );
    assert.match(r.stderr, /systemctl edit --runtime/);
    assert.ok(pidAlive(main), 'the main process lives');
    assert.equal(Number(show(unit, 'MainPID').get('MainPID')), main, 'the same main process, not a restart');
    const state = await agentctl(['state', ...target]);
    assert.equal(state.stdout.trim().split(' ')[0], 'THAWED', 'left as it was');
  });

  test('Restart=no: the checkpoint kills the service, which systemd does not start again', async () => {
    const { unit, main, target } = await service('once', 'no');
    const r = await agentctl(['--timeout', '300', 'checkpoint', ...target, '--after', 'killed', '--json']);
    assert.equal(r.code, 0, r.stderr);
    checkpoints.push((JSON.parse(r.stdout) as { id: string }).id);
    await waitUntil(`${main} to be gone`, () => !pidAlive(main), 60_000);
    await waitUntil(`${unit} to end`, () => show(unit, 'ActiveState').get('ActiveState') !== 'active', 60_000);
    sleepSync(3000); // three times its RestartSec: long enough for a restart that was coming
    assert.notEqual(show(unit, 'ActiveState').get('ActiveState'), 'active', 'not started again');
  });

  test("the error's way out: a runtime drop-in with Restart=no, and the checkpoint goes through with nothing restarted", async () => {
    const { unit, main, target } = await service('dropin', 'on-failure');
    const dir = `/run/systemd/system/${unit}.d`;
    mkdirSync(dir, { recursive: true });
    dropIns.push(dir);
    writeFileSync(`${dir}/50-agentd-test.conf`, '[Service]\nRestart=no\n');
    assert.equal(systemctl('daemon-reload').status, 0);
    assert.equal(show(unit, 'Restart').get('Restart'), 'no');
    const r = await agentctl(['--timeout', '300', 'checkpoint', ...target, '--after', 'killed', '--json']);
    assert.equal(r.code, 0, r.stderr);
    checkpoints.push((JSON.parse(r.stdout) as { id: string }).id);
    await waitUntil(`${main} to be gone`, () => !pidAlive(main), 60_000);
    sleepSync(3000);
    assert.notEqual(show(unit, 'ActiveState').get('ActiveState'), 'active', 'not started again');
  });
});
