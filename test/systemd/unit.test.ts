// Unit names as targets, the parts that need no systemd: which arguments are unit names, what a
// `systemctl show` answer means, and what agentctl says on a host where systemd is not PID 1 (run
// for real there; test/systemd/service.test.ts covers a host where it is).

import { test, describe } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { isAgentError } from '../../src/errors/index.js';
import { isUnitName, parseUnitList, resolveUnitCgroup, unitNames } from '../../src/systemd/index.js';
import { parseShow, unitCgroupFrom } from '../../src/systemd/unit.js';
import { REPO_ROOT } from '../helpers/lab.js';

describe('unit names', () => {
  test('one path segment ending in .service, .scope or .slice is a unit; anything else a path', () => {
    for (const name of ['build-42.service', 'session-3.scope', 'user-1000.slice', 'getty@tty1.service', '-.slice'])
      assert.ok(isUnitName(name), name);
    for (const path of ['system.slice/build-42.service', 'jobs/build-42', 'build-42', '/sys/fs/cgroup/x.service', 'x.socket', '.service'])
      assert.ok(!isUnitName(path), path);
  });

  test('systemctl show answers: a cgroup, no such unit, no cgroup', () => {
    const props = parseShow('LoadState=loaded\nActiveState=active\nControlGroup=/system.slice/build-42.service\n');
    assert.deepEqual(unitCgroupFrom('build-42.service', props), {
      unit: 'build-42.service',
      controlGroup: '/system.slice/build-42.service',
      activeState: 'active',
    });
    assert.throws(
      () => unitCgroupFrom('nope.service', parseShow('LoadState=not-found\nActiveState=inactive\nControlGroup=\n')),
      (err) => isAgentError(err, 'ENOENT') && /systemd has no unit nope\.service/.test(err.message),
    );
    assert.throws(
      () => unitCgroupFrom('idle.service', parseShow('LoadState=loaded\nActiveState=inactive\nControlGroup=\n')),
      (err) => isAgentError(err, 'ENOENT') && /unit idle\.service has no cgroup \(ActiveState=inactive\)/.test(err.message),
    );
  });

  test('completion: the unit names of systemctl list-units, services, scopes and slices only; none without systemd', async () => {
    const listed = [
      'build-42.service   loaded active running Build 42',
      '● broken.service   not-found inactive dead broken.service',
      'session-3.scope    loaded active running Session 3 of User root',
      'system.slice       loaded active active  System Slice',
      'dbus.socket        loaded active running D-Bus System Message Bus Socket',
      '',
    ].join('\n');
    assert.deepEqual(parseUnitList(listed), ['build-42.service', 'broken.service', 'session-3.scope', 'system.slice']);
    assert.deepEqual(await unitNames('b', { runtimeDir: '/nonexistent/run/systemd/system' }), []);
    assert.deepEqual(await unitNames('system.slice/', {}), [], 'a path is not a unit name');
  });

  test('without systemd: EINVAL saying systemd is not the init system here', async () => {
    await assert.rejects(
      resolveUnitCgroup('build-42.service', { runtimeDir: '/nonexistent/run/systemd/system' }),
      (err) =>
        isAgentError(err, 'EINVAL') && /systemd is not the init system here \(no \/nonexistent\/run\/systemd\/system\)/.test(err.message),
    );
  });

  test(
    'agentctl on a host where systemd is not PID 1: exit 2 and the reason, before it contacts any agent',
    { skip: existsSync('/run/systemd/system') && 'systemd is PID 1 here (test/systemd/service.test.ts covers unit names here)' },
    () => {
      for (const cmd of ['state', 'freeze', 'thaw', 'checkpoint']) {
        const r = spawnSync(
          process.execPath,
          [join(REPO_ROOT, 'bin/agentctl'), '--socket', '/nonexistent/agentd.sock', cmd, 'build-42.service'],
          {
            encoding: 'utf8',
          },
        );
        assert.equal(r.status, 2, `${cmd}: ${r.stderr}`);
        assert.match(r.stderr, /^agentctl: EINVAL: build-42\.service names a systemd unit, but systemd is not the init system here/m, cmd);
      }
    },
  );
});
