// The systemd units and the tmpfiles.d entry: `systemd-analyze verify` passes on them as
// scripts/setup.sh installs them (in a scratch root holding the distribution's units and the
// launcher setup installs, so nothing on this host is touched), they agree with agentd's defaults,
// and no sandboxing that would break CRIU restores creeps in.

import { test, describe, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { chmodSync, cpSync, existsSync, mkdirSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { DEFAULT_IMAGES_DIR, DEFAULT_RUN_DIR, DEFAULT_SOCKET } from '../../src/defaults/index.js';
import { Lab, REPO_ROOT } from '../helpers/lab.js';

const lab = new Lab('systemd');
after(() => lab.cleanup());

const UNITS = join(REPO_ROOT, 'systemd');
const SETUP = join(REPO_ROOT, 'scripts', 'setup.sh');
const SYSTEM_UNITS = '/usr/lib/systemd/system';
const haveAnalyze = spawnSync('systemd-analyze', ['--version']).status === 0;

function unit(name: string): string {
  return readFileSync(join(UNITS, name), 'utf8');
}

/** `Key=value` settings of a unit file, comments and section headers left out. */
function settings(text: string): Map<string, string[]> {
  const out = new Map<string, string[]>();
  for (const line of text.split('\n')) {
    const m = /^([A-Za-z]+)=(.*)$/.exec(line.trim());
    if (m) out.set(m[1], [...(out.get(m[1]) ?? []), m[2]]);
  }
  return out;
}

/** A variable assigned in setup.sh, e.g. DAEMON_LAUNCHER=/usr/local/sbin/agentd. */
function setupVariable(name: string): string {
  const m = new RegExp(`^${name}=(\\S+)$`, 'm').exec(readFileSync(SETUP, 'utf8'));
  assert.ok(m, `setup.sh assigns ${name}`);
  return m[1];
}

/** A scratch root as setup leaves a host: distribution units, ours in /etc, the launcher. */
function installedRoot(): string {
  const root = lab.tempDir('root');
  mkdirSync(join(root, 'etc/systemd/system'), { recursive: true });
  cpSync(SYSTEM_UNITS, join(root, SYSTEM_UNITS), { recursive: true });
  for (const name of ['agentd.socket', 'agentd.service']) cpSync(join(UNITS, name), join(root, 'etc/systemd/system', name));
  const launcher = join(root, setupVariable('DAEMON_LAUNCHER'));
  mkdirSync(dirname(launcher), { recursive: true });
  writeFileSync(launcher, '#!/bin/sh\n');
  chmodSync(launcher, 0o755);
  return root;
}

describe('systemd units', () => {
  test('systemd-analyze verify passes, without a single warning', { skip: !haveAnalyze && 'systemd-analyze is not installed' }, () => {
    const root = installedRoot();
    const result = spawnSync('systemd-analyze', ['verify', '--man=no', `--root=${root}`, 'agentd.socket', 'agentd.service'], {
      encoding: 'utf8',
    });
    assert.equal(result.status, 0, result.stderr);
    assert.equal(result.stderr.trim(), '', 'no warnings');
  });

  test(
    'verify catches what it should: a missing ExecStart binary fails (so the pass above means something)',
    { skip: !haveAnalyze && 'systemd-analyze is not installed' },
    () => {
      const root = installedRoot();
      const broken = unit('agentd.service').replace(/^ExecStart=\S+/m, 'ExecStart=/usr/local/sbin/agentd-missing');
      writeFileSync(join(root, 'etc/systemd/system/agentd.service'), broken);
      const result = spawnSync('systemd-analyze', ['verify', '--man=no', `--root=${root}`, 'agentd.service'], { encoding: 'utf8' });
      assert.notEqual(result.status, 0);
      assert.match(result.stderr, /agentd-missing is not executable/);
    },
  );

  test('the service: Type=notify, Restart=on-failure, ExecStart = the launcher setup installs, on agentd defaults', () => {
    const s = settings(unit('agentd.service'));
    assert.deepEqual(s.get('Type'), ['notify']);
    assert.deepEqual(s.get('NotifyAccess'), ['main']);
    assert.deepEqual(s.get('Restart'), ['on-failure']);
    assert.deepEqual(s.get('Requires'), ['agentd.socket']);
    const [exec] = s.get('ExecStart') ?? [];
    const argv = exec.split(/\s+/);
    assert.equal(argv[0], setupVariable('DAEMON_LAUNCHER'));
    assert.equal(argv[argv.indexOf('--socket') + 1], DEFAULT_SOCKET);
    assert.equal(argv[argv.indexOf('--run-dir') + 1], DEFAULT_RUN_DIR);
    assert.equal(argv[argv.indexOf('--images-dir') + 1], DEFAULT_IMAGES_DIR);
    // CRIU out of reach of the unit's kills, and restores that systemd tracks (docs/daemon-and-cli.md).
    assert.ok(argv.includes('--criu-scope') && argv.includes('--restore-scope'), exec);
    assert.ok(DEFAULT_IMAGES_DIR.startsWith('/var/lib/' + s.get('StateDirectory')?.[0] + '/'), 'StateDirectory holds the images');
  });

  test('the service has no sandboxing that restored workloads would inherit or CRIU would see through', () => {
    const s = settings(unit('agentd.service'));
    // Each creates a mount or other namespace, a seccomp filter, no_new_privs or a capability bound:
    // all of them would apply to every workload CRIU restores as agentd's descendant (see the unit).
    for (const key of [
      'ProtectSystem',
      'ProtectHome',
      'PrivateTmp',
      'ReadWritePaths',
      'ReadOnlyPaths',
      'InaccessiblePaths',
      'TemporaryFileSystem',
      'ProtectKernelTunables',
      'ProtectControlGroups',
      'ProtectKernelModules',
      'ProtectProc',
      'ProcSubset',
      'PrivateDevices',
      'PrivateNetwork',
      'PrivateIPC',
      'PrivateUsers',
      'ProtectHostname',
      'ProtectClock',
      'SystemCallFilter',
      'SystemCallArchitectures',
      'RestrictAddressFamilies',
      'RestrictNamespaces',
      'MemoryDenyWriteExecute',
      'LockPersonality',
      'RestrictRealtime',
      'RestrictSUIDSGID',
      'NoNewPrivileges',
      'CapabilityBoundingSet',
      'AmbientCapabilities',
      'User',
      'DynamicUser',
      'RootDirectory',
    ]) {
      assert.equal(s.has(key), false, `${key}= must not be set`);
    }
    assert.deepEqual(s.get('UMask'), ['0077']);
  });

  test('the socket: ListenStream is the agent default, 0660, root:agentd', () => {
    const s = settings(unit('agentd.socket'));
    assert.deepEqual(s.get('ListenStream'), [DEFAULT_SOCKET]);
    assert.deepEqual(s.get('SocketMode'), ['0660']);
    assert.deepEqual(s.get('SocketUser'), ['root']);
    assert.deepEqual(s.get('SocketGroup'), ['agentd']);
    assert.deepEqual(s.get('Accept'), ['no']);
  });

  test(
    'tmpfiles.d creates /run/agentd 0755 root:root (in a scratch root)',
    { skip: spawnSync('systemd-tmpfiles', ['--version']).status !== 0 && 'systemd-tmpfiles is not installed' },
    () => {
      const root = lab.tempDir('tmpfiles');
      const result = spawnSync('systemd-tmpfiles', [`--root=${root}`, '--create', join(UNITS, 'agentd.tmpfiles.conf')], {
        encoding: 'utf8',
      });
      assert.equal(result.status, 0, result.stderr);
      const st = statSync(join(root, DEFAULT_RUN_DIR));
      assert.ok(st.isDirectory());
      assert.equal(st.mode & 0o7777, 0o755);
      assert.equal(st.uid, 0);
      assert.equal(st.gid, 0);
    },
  );

  test(
    'where setup installed the units on this host, the installed ones verify too',
    { skip: !(haveAnalyze && existsSync('/etc/systemd/system/agentd.service')) && 'setup has not installed the units on this host' },
    () => {
      const result = spawnSync(
        'systemd-analyze',
        ['verify', '--man=no', '/etc/systemd/system/agentd.socket', '/etc/systemd/system/agentd.service'],
        {
          encoding: 'utf8',
        },
      );
      assert.equal(result.status, 0, result.stderr);
    },
  );
});

describe('scripts/setup.sh', () => {
  test('is valid bash, is what `npm run setup` runs, and installs what the units name', () => {
    const syntax = spawnSync('bash', ['-n', SETUP], { encoding: 'utf8' });
    assert.equal(syntax.status, 0, syntax.stderr);
    const pkg = JSON.parse(readFileSync(join(REPO_ROOT, 'package.json'), 'utf8')) as { scripts: Record<string, string> };
    assert.equal(pkg.scripts.setup, 'bash scripts/setup.sh');
    const text = readFileSync(SETUP, 'utf8');
    for (const step of [
      'bash scripts/install-criu.sh',
      'npm ci',
      'npm run --silent build',
      'groupadd --system agentd',
      'systemctl enable agentd.socket agentd.service',
    ]) {
      assert.ok(text.includes(step), `setup runs ${step}`);
    }
    assert.equal(setupVariable('SOCKET'), DEFAULT_SOCKET);
    assert.equal(setupVariable('RUN_DIR'), DEFAULT_RUN_DIR);
    assert.equal(setupVariable('PID_FILE'), '$RUN_DIR/agentd.pid');
    assert.equal(setupVariable('LOG_FILE'), '/var/log/agentd.log');
  });
});
