// Restores as systemd scopes (src/systemd/restore-scope.ts): the name and the D-Bus call as data;
// on a host without systemd as PID 1, a restore that asks for a scope is refused before anything
// changes; under systemd (the test:vm guests, the system agent `npm run setup` installed, which
// passes --restore-scope), a restore becomes agentd-restore-ID.scope or the unit asked for, which
// systemctl sees and stops, and a name systemd has already is EBUSY with nothing restored.

import { test, describe, after } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, readFileSync, rmdirSync } from 'node:fs';
import { checkMayCreate, creationRefusal, owningUnit, restoreScopeName, startScopeArgs, systemdCgroupOf } from '../../src/systemd/index.js';
import { outermostToMake, type CgroupPlan } from '../../src/cgroup/index.js';
import { isAgentError } from '../../src/errors/index.js';
import { Lab, anyHierarchy, pidAlive, waitUntil, type TestCgroup } from '../helpers/lab.js';
import { counterValue, countingTree } from '../checkpoint/helpers.js';
import { api as privateApi, withAgent } from '../daemon/agent.js';
import { agentctl, api, cgroupLines, run, show, systemctl, systemdSkip, undoMade } from './system-agent.js';
import { join } from 'node:path';

test('restoreScopeName: agentd-restore-ID.scope by default, .scope added to a name given, bad names refused', () => {
  assert.equal(restoreScopeName('20261201T063940Z-4bf4d8'), 'agentd-restore-20261201T063940Z-4bf4d8.scope');
  assert.equal(restoreScopeName('x', 'build-42'), 'build-42.scope');
  assert.equal(restoreScopeName('x', 'build-42.scope'), 'build-42.scope');
  for (const bad of ['a/b', 'a b', '-x', 'x'.repeat(250), 'build.service/..']) {
    assert.throws(
      () => restoreScopeName('x', bad),
      (err) => isAgentError(err, 'EINVAL') && /is not a scope unit name/.test(err.message),
      bad,
    );
  }
});

test("startScopeArgs: StartTransientUnit's signature, the pids as an array, the property count matching", () => {
  const args = startScopeArgs('a.scope', [10, 20], 'agentd: restore', true);
  assert.deepEqual(args.slice(0, 9), [
    'call',
    'org.freedesktop.systemd1',
    '/org/freedesktop/systemd1',
    'org.freedesktop.systemd1.Manager',
    'StartTransientUnit',
    'ssa(sv)a(sa(sv))',
    'a.scope',
    'fail',
    '4',
  ]);
  const props = args.slice(9);
  assert.deepEqual(props.slice(props.indexOf('PIDs'), props.indexOf('PIDs') + 5), ['PIDs', 'au', '2', '10', '20']);
  assert.deepEqual(props.slice(props.indexOf('Delegate'), props.indexOf('Delegate') + 3), ['Delegate', 'b', 'true']);
  assert.equal(props.at(-1), '0', 'no auxiliary units');
  assert.ok(!startScopeArgs('a.scope', [1], 'd', false).includes('Delegate'));
  assert.equal(startScopeArgs('a.scope', [1], 'd', false)[8], '3');
});

test('systemdCgroupOf: name=systemd on cgroup v1 and hybrid, the unified line on pure v2', () => {
  assert.equal(systemdCgroupOf('0::/system.slice/a.scope\n'), '/system.slice/a.scope');
  assert.equal(
    systemdCgroupOf('5:freezer:/jobs/x\n1:name=systemd:/system.slice/b.scope\n0::/system.slice/b.scope\n'),
    '/system.slice/b.scope',
  );
  assert.equal(systemdCgroupOf('5:freezer:/jobs/x\n'), undefined);
});

test('owningUnit: the outermost unit that is not a slice, else the innermost slice, else none', () => {
  assert.deepEqual(owningUnit('system.slice/build.service/a/b'), { unit: 'build.service', cgroup: 'system.slice/build.service' });
  // Below a (delegated) unit, names that look like units are the delegate's, not systemd's.
  assert.deepEqual(owningUnit('machine.slice/c.scope/payload/inner.service'), { unit: 'c.scope', cgroup: 'machine.slice/c.scope' });
  assert.deepEqual(owningUnit('user.slice/user-0.slice'), { unit: 'user-0.slice', cgroup: 'user.slice/user-0.slice' });
  assert.deepEqual(owningUnit('system.slice/stray'), { unit: 'system.slice', cgroup: 'system.slice' });
  assert.equal(owningUnit(''), undefined);
  assert.equal(owningUnit('jobs/a'), undefined);
});

test('creationRefusal: inside a slice or an undelegated unit, or a unit-like name outside units, is refused; a delegated subtree and plain paths are not', () => {
  const props = (delegate: string, cgroup: string) =>
    new Map([
      ['Delegate', delegate],
      ['ControlGroup', cgroup],
    ]);
  const svc = { unit: 'b.service', cgroup: 'system.slice/b.service' };
  assert.match(creationRefusal('system.slice/x', owningUnit('system.slice'))!, /inside system\.slice, whose cgroups systemd makes/);
  assert.match(
    creationRefusal('system.slice/b.service/x', svc, props('no', '/system.slice/b.service'))!,
    /unit b\.service \(Delegate=no\)/,
  );
  assert.equal(creationRefusal('system.slice/b.service/x', svc, props('yes', '/system.slice/b.service')), undefined);
  // Delegate=yes, but systemd runs the unit elsewhere (or not at all): the path is not its subtree.
  assert.match(creationRefusal('system.slice/b.service/x', svc, props('yes', ''))!, /Delegate=yes\), whose subtree systemd manages/);
  assert.match(creationRefusal('build-42.scope', undefined)!, /named like a systemd unit/);
  assert.equal(creationRefusal('jobs', undefined), undefined);
  assert.equal(creationRefusal('jobs/x.service', undefined), undefined, 'not where systemd would make a unit of its own');
  for (const why of [creationRefusal('system.slice/x', owningUnit('system.slice'))!]) assert.match(why, /--unit NAME.*Delegate=yes/);
});

test('checkMayCreate asks nothing on cgroup v1, with nothing to make, or where systemd is not PID 1', async () => {
  await checkMayCreate('v1', ['system.slice/x']);
  await checkMayCreate('v2', []);
  await checkMayCreate('v2', ['system.slice/x'], '/nonexistent-systemd-runtime-dir');
});

test('outermostToMake: the first missing directory of each plan, each once', () => {
  const plan = (path: string, missing: number): CgroupPlan => ({
    hierarchy: 'v2',
    path,
    missing: Array.from(
      { length: missing },
      (_, i) =>
        `/sys/fs/cgroup/${path
          .split('/')
          .slice(0, path.split('/').length - missing + i + 1)
          .join('/')}`,
    ),
  });
  assert.deepEqual(outermostToMake([plan('a/b/c', 2), plan('a/b/c/d', 3), plan('a/e', 0), plan('f', 1)]), ['a/b', 'f']);
  assert.deepEqual(outermostToMake([plan('a', 0)]), []);
});

const withoutSystemd = existsSync('/run/systemd/system') && 'systemd is PID 1 here: the tests below cover a restore under it';

describe('a restore that asks for a scope where systemd is not PID 1', { skip: withoutSystemd }, () => {
  const { lab, agent } = withAgent('restore-scope-nosd');
  test('is refused with EINVAL before anything changes; a malformed name is refused first', async () => {
    const hierarchy = anyHierarchy();
    const { cgroup, pids } = await countingTree(lab, hierarchy, 'noscope');
    const created = await privateApi(agent.socket, 'POST', '/v1/checkpoints', {
      body: { cgroup: cgroup.path, hierarchy, after: 'killed' },
    });
    assert.equal(created.status, 201, created.text);
    for (const pid of pids) await waitUntil(`pid ${pid} to be gone`, () => !pidAlive(pid));
    const path = `/v1/checkpoints/${created.body.id}/restore`;
    const malformed = await privateApi(agent.socket, 'POST', path, { body: { unit: 'a/b' } });
    assert.equal(malformed.status, 400, malformed.text);
    assert.match(malformed.body.error.message, /"a\/b\.scope" is not a scope unit name/);
    const asked = await privateApi(agent.socket, 'POST', path, { body: { unit: 'build-42' } });
    assert.equal(asked.status, 400, asked.text);
    assert.match(asked.body.error.message, /scope unit build-42\.scope, but systemd is not the init system here/);
    for (const pid of pids) assert.ok(!pidAlive(pid), `saved pid ${pid} was not restored`);
    // The agent's default (no --restore-scope without systemd) makes none: the restore goes on as before.
    const restored = await privateApi(agent.socket, 'POST', path, { body: {} });
    assert.equal(restored.status, 200, restored.text);
    assert.equal(restored.body.unit, undefined);
    assert.deepEqual(
      [...restored.body.pids].sort((a: number, b: number) => a - b),
      pids,
    );
  });
});

const SKIP = systemdSkip();

describe('restores as systemd scopes (systemd as PID 1, the system agent)', { skip: SKIP }, () => {
  const lab = new Lab('restore-scope');
  const PREFIX = `agentd-test-${process.pid}`;
  const units: string[] = [];
  const checkpoints: string[] = [];
  after(async () => {
    await undoMade(lab, units, checkpoints);
  });

  const hierarchy = SKIP ? 'v2' : anyHierarchy();
  const inScope = (pid: number, unit: string) => systemdCgroupOf(cgroupLines(pid).join('\n'))?.endsWith(`/${unit}`) === true;

  /** A counting tree checkpointed --after killed by the system agent: its id, pids and counter dir. */
  async function checkpointed(name: string): Promise<{ id: string; pids: number[]; dir: string; cgroup: TestCgroup }> {
    const { cgroup, pids, dir } = await countingTree(lab, hierarchy, name);
    const created = await api('POST', '/v1/checkpoints', { cgroup: cgroup.path, hierarchy, after: 'killed' });
    assert.equal(created.status, 201, JSON.stringify(created.body));
    const id = created.body.id as string;
    checkpoints.push(id);
    for (const pid of pids) await waitUntil(`pid ${pid} to be gone`, () => !pidAlive(pid), 60_000);
    return { id, pids, dir, cgroup };
  }

  test('a restore becomes agentd-restore-ID.scope: systemd tracks every pid, agentctl names it, systemctl stop ends it', async () => {
    const { id, pids, dir, cgroup } = await checkpointed('default');
    const r = await agentctl(['--timeout', '300', 'restore', id, '--json']);
    assert.equal(r.code, 0, r.stderr);
    const summary = JSON.parse(r.stdout) as { unit: string; cgroup: string; pids: number[]; state: string };
    const unit = `agentd-restore-${id}.scope`;
    units.push(unit);
    assert.equal(summary.unit, unit);
    assert.deepEqual(
      [...summary.pids].sort((a, b) => a - b),
      pids,
      'the saved pids',
    );
    assert.equal(show(unit, 'ActiveState').get('ActiveState'), 'active');
    for (const pid of pids) assert.ok(inScope(pid, unit), `pid ${pid} is in ${unit}: ${cgroupLines(pid).join(' | ')}`);
    const controlGroup = show(unit, 'ControlGroup').get('ControlGroup') ?? '';
    // v2: the scope is the freezer cgroup; v1: systemd tracks in name=systemd, the freezer cgroup stays.
    assert.equal(summary.cgroup, hierarchy === 'v2' ? controlGroup.slice(1) : cgroup.path);
    const counter = join(dir, 'child-1');
    const count = counterValue(counter);
    await waitUntil('the restored counter to go on', () => counterValue(counter) > count, 60_000);
    if (hierarchy === 'v2') {
      const state = await agentctl(['state', unit]);
      assert.equal(state.code, 0, state.stderr);
      assert.equal(state.stdout.trim().split(' ')[0], 'THAWED');
      // The placeholder the scope was made around is gone: only the restored processes are in it.
      const procs = () => readFileSync(`/sys/fs/cgroup${controlGroup}/cgroup.procs`, 'utf8').trim().split('\n').map(Number);
      await waitUntil(
        `only the restored pids in ${unit}`,
        () =>
          procs()
            .sort((a, b) => a - b)
            .join() === pids.join(),
        30_000,
      );
    }
    assert.equal(systemctl('stop', unit).status, 0);
    for (const pid of pids) await waitUntil(`pid ${pid} to end with ${unit}`, () => !pidAlive(pid), 60_000);
  });

  test('--unit NAME names the scope; a name systemd has already is EBUSY and nothing is restored; --no-unit makes none', async () => {
    const { id, pids, cgroup } = await checkpointed('named');
    const taken = `${PREFIX}-taken.scope`;
    const holder = lab.spawn('systemd-run', ['--quiet', '--scope', `--unit=${taken}`, 'sleep', '100000']);
    units.push(taken);
    await waitUntil(`${taken} to run`, () => show(taken, 'ActiveState').get('ActiveState') === 'active', 60_000);
    const refused = await agentctl(['--timeout', '300', 'restore', id, '--unit', taken]);
    assert.equal(refused.code, 4, refused.stderr);
    assert.match(refused.stderr, new RegExp(`EBUSY: systemd has a unit ${taken.replace(/\./g, '\\.')} already \\(ActiveState=active\\)`));
    for (const pid of pids) assert.ok(!pidAlive(pid), `saved pid ${pid} was not restored`);
    holder.kill('SIGTERM');

    const mine = `${PREFIX}-mine`;
    units.push(`${mine}.scope`);
    const named = await agentctl(['--timeout', '300', 'restore', id, '--unit', mine, '--json']);
    assert.equal(named.code, 0, named.stderr);
    assert.equal((JSON.parse(named.stdout) as { unit: string }).unit, `${mine}.scope`);
    for (const pid of pids) assert.ok(inScope(pid, `${mine}.scope`), `pid ${pid} is in ${mine}.scope`);
    assert.equal(systemctl('stop', `${mine}.scope`).status, 0);
    for (const pid of pids) await waitUntil(`pid ${pid} to end`, () => !pidAlive(pid), 60_000);

    const none = await agentctl(['--timeout', '300', 'restore', id, '--no-unit', '--json']);
    assert.equal(none.code, 0, none.stderr);
    const plain = JSON.parse(none.stdout) as { unit?: string; cgroup: string };
    assert.equal(plain.unit, undefined);
    assert.equal(plain.cgroup, cgroup.path, 'back in the cgroup it came from');
    await lab.killIn(cgroup);
  });

  test('--no-unit --cgroup makes a cgroup only where agentd may: never inside a slice or a unit that did not delegate (v2); anywhere in the v1 freezer hierarchy', async () => {
    const { id, pids } = await checkpointed('where');
    const refused = async (cgroupPath: string, why: RegExp) => {
      const r = await agentctl(['--timeout', '300', 'restore', id, '--no-unit', '--cgroup', cgroupPath]);
      assert.equal(r.code, 1, `${cgroupPath}: ${r.stderr}`);
      assert.match(r.stderr, why);
      assert.match(r.stderr, /Delegate=yes/, 'the error says where a restore may go');
      assert.ok(!existsSync(`/sys/fs/cgroup/${cgroupPath}`), `${cgroupPath} was not made`);
      for (const pid of pids) assert.ok(!pidAlive(pid), `saved pid ${pid} was not restored`);
    };
    if (hierarchy === 'v2') {
      await refused(
        `system.slice/${PREFIX}-stray`,
        /EACCES: cgroup system\.slice\/agentd-test-\d+-stray would be made inside system\.slice/,
      );
      // A running service that did not ask for delegation.
      const service = `${PREFIX}-plain.service`;
      units.push(service);
      const started = run('systemd-run', ['--quiet', `--unit=${service}`, '-p', 'StandardOutput=null', 'sleep', '100000']);
      assert.equal(started.status, 0, started.stderr);
      const serviceCgroup = (show(service, 'ControlGroup').get('ControlGroup') ?? '').slice(1);
      await refused(`${serviceCgroup}/restored`, new RegExp(`inside unit ${service.replace(/\./g, '\\.')} \\(Delegate=no\\)`));
      // A name systemd would use for a unit of its own, outside every unit.
      await refused(`${PREFIX}-job.service`, /is named like a systemd unit at the top/);
      // A scope that delegates its subtree: the restore goes below it, and stays out of systemd's way.
      const delegated = `${PREFIX}-delegated.scope`;
      units.push(delegated);
      const holder = lab.spawn('systemd-run', ['--quiet', '--scope', '-p', 'Delegate=yes', `--unit=${delegated}`, 'sleep', '100000']);
      await waitUntil(`${delegated} to run`, () => show(delegated, 'ActiveState').get('ActiveState') === 'active', 60_000);
      const below = `${(show(delegated, 'ControlGroup').get('ControlGroup') ?? '').slice(1)}/restored`;
      const r = await agentctl(['--timeout', '300', 'restore', id, '--no-unit', '--cgroup', below, '--json']);
      assert.equal(r.code, 0, r.stderr);
      assert.equal((JSON.parse(r.stdout) as { cgroup: string }).cgroup, below);
      for (const pid of pids) assert.ok(cgroupLines(pid).includes(`0::/${below}`), `pid ${pid} is in ${below}`);
      await lab.killIn({ hierarchy: 'v2', path: below, dir: `/sys/fs/cgroup/${below}` } as TestCgroup);
      holder.kill('SIGTERM');
    } else {
      // systemd does not manage the v1 freezer hierarchy (its v1 controllers are cpu, memory, pids and
      // the like): a path under a name like system.slice is nobody's there, and is made.
      const path = `system.slice/${PREFIX}-v1`;
      const hadSlice = existsSync('/sys/fs/cgroup/freezer/system.slice');
      const r = await agentctl(['--timeout', '300', 'restore', id, '--no-unit', '--cgroup', path, '--json']);
      assert.equal(r.code, 0, r.stderr);
      assert.equal((JSON.parse(r.stdout) as { cgroup: string }).cgroup, path);
      const made = { hierarchy: 'v1', path, dir: `/sys/fs/cgroup/freezer/${path}` } as TestCgroup;
      await lab.killIn(made);
      rmdirSync(made.dir);
      if (!hadSlice) rmdirSync('/sys/fs/cgroup/freezer/system.slice');
    }
  });
});
