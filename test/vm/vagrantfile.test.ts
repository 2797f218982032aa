// The Vagrantfile (docs/vm.md) is checked with Vagrant itself: `vagrant validate` loads it and
// checks every machine's configuration. Runs offline and touches nothing of the user's Vagrant:
// VAGRANT_HOME is a fresh temporary directory, Vagrant's update checks are off, and when we are root
// every call runs in a new network namespace (`unshare --net`), where only a downed loopback exists.

import { spawn } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { delimiter, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';

const REPO_ROOT = fileURLToPath(new URL('../../../', import.meta.url));

function onPath(command: string): boolean {
  return (process.env.PATH ?? '').split(delimiter).some((dir) => dir !== '' && existsSync(join(dir, command)));
}

const missing = !onPath('vagrant') && 'vagrant is not installed (apt-get install vagrant)';
const isolate = process.getuid?.() === 0 && onPath('unshare');

interface Run {
  code: number | null;
  output: string;
}

const home = mkdtempSync(join(tmpdir(), 'agentd-vagrant-home-'));
after(() => rmSync(home, { recursive: true, force: true }));

/** `vagrant ARGS...` in the repository, with extra environment variables. */
function vagrant(args: string[], env: Record<string, string> = {}): Promise<Run> {
  const command = isolate ? 'unshare' : 'vagrant';
  const argv = isolate ? ['--net', '--', 'vagrant', ...args] : args;
  const child = spawn(command, argv, {
    cwd: REPO_ROOT,
    stdio: ['ignore', 'pipe', 'pipe'],
    env: {
      ...process.env,
      VAGRANT_HOME: home,
      VAGRANT_CHECKPOINT_DISABLE: '1',
      VAGRANT_BOX_UPDATE_CHECK_DISABLE: '1',
      VAGRANT_NO_COLOR: '1',
      ...env,
    },
  });
  let output = '';
  child.stdout.on('data', (chunk: Buffer) => (output += chunk.toString()));
  child.stderr.on('data', (chunk: Buffer) => (output += chunk.toString()));
  return new Promise((resolve, reject) => {
    child.on('error', reject);
    child.on('close', (code) => resolve({ code, output }));
  });
}

/**
 * How to validate: against libvirt's provider checks when the vagrant-libvirt plugin is there
 * (Debian's vagrant recommends it); otherwise with --ignore-provider, since `vagrant validate`
 * against a provider that is not installed (VirtualBox, the default) fails before reading ours.
 */
let validate: { args: string[]; env: Record<string, string> } = { args: ['validate', '--ignore-provider'], env: {} };

describe('the Vagrantfile', { skip: missing }, () => {
  before(async () => {
    const plugins = await vagrant(['plugin', 'list']);
    if (/^vagrant-libvirt\b/m.test(plugins.output)) validate = { args: ['validate'], env: { VAGRANT_DEFAULT_PROVIDER: 'libvirt' } };
  });

  test('vagrant validate accepts it as it is', async () => {
    const run = await vagrant(validate.args, validate.env);
    assert.equal(run.code, 0, run.output);
    assert.match(run.output, /Vagrantfile validated successfully/);
  });

  test('it defines exactly the machines v2 and v1', async () => {
    // --ignore-provider names every machine it skips the provider checks of.
    const run = await vagrant(['validate', '--ignore-provider']);
    assert.equal(run.code, 0, run.output);
    const machines = [...run.output.matchAll(/^==> (\S+): Ignoring provider config/gm)].map((m) => m[1]).sort();
    assert.deepEqual(machines, ['v1', 'v2']);
  });

  test('AGENTD_VAGRANT_V2B=1 adds v2b, a second machine of the v2 layout', async () => {
    const run = await vagrant(['validate', '--ignore-provider'], { AGENTD_VAGRANT_V2B: '1' });
    assert.equal(run.code, 0, run.output);
    const machines = [...run.output.matchAll(/^==> (\S+): Ignoring provider config/gm)].map((m) => m[1]).sort();
    assert.deepEqual(machines, ['v1', 'v2', 'v2b']);
    const bad = await vagrant(['validate', '--ignore-provider'], { AGENTD_VAGRANT_V2B: 'yes' });
    assert.notEqual(bad.code, 0);
    assert.match(bad.output, /AGENTD_VAGRANT_V2B must be 0 or 1, not yes/);
  });

  // What test:vm sets (scripts/vm/vagrant-inside.sh), but with rsync: a 9p folder is checked by asking
  // a running libvirtd.
  test('the settings test:vm uses are accepted: offline, direct kernel boot, console files', async () => {
    const run = await vagrant(validate.args, {
      ...validate.env,
      AGENTD_OFFLINE: '1',
      AGENTD_VAGRANT_LIBVIRT_DRIVER: 'qemu',
      AGENTD_VAGRANT_KERNEL: '/boot/vmlinuz',
      AGENTD_VAGRANT_INITRD: '/boot/initrd.img',
      AGENTD_VAGRANT_CONSOLE_DIR: home,
      AGENTD_VAGRANT_V2B: '1',
      AGENTD_TEST_TARGETS: 'dist/test/cgroup/resolve.test.js',
    });
    assert.equal(run.code, 0, run.output);
    const half = await vagrant(validate.args, { ...validate.env, AGENTD_VAGRANT_KERNEL: '/boot/vmlinuz' });
    assert.notEqual(half.code, 0);
    assert.match(half.output, /AGENTD_VAGRANT_KERNEL and AGENTD_VAGRANT_INITRD go together/);
  });

  // The synced folder type stays at its default here: Vagrant checks 9p and virtualbox folders by
  // asking the provider itself (a running libvirtd, an installed VirtualBox).
  test('the box, memory, CPUs and libvirt driver can be overridden', async () => {
    const run = await vagrant(validate.args, {
      ...validate.env,
      AGENTD_VAGRANT_BOX: 'ubuntu/jammy64',
      AGENTD_VAGRANT_BOX_V1: 'debian/bookworm64',
      AGENTD_VAGRANT_MEMORY: '2048',
      AGENTD_VAGRANT_CPUS: '1',
      AGENTD_VAGRANT_LIBVIRT_DRIVER: 'qemu',
    });
    assert.equal(run.code, 0, run.output);
  });

  test('a bad override is refused, naming the variable', async () => {
    const driver = await vagrant(validate.args, { ...validate.env, AGENTD_VAGRANT_LIBVIRT_DRIVER: 'xen' });
    assert.notEqual(driver.code, 0);
    assert.match(driver.output, /AGENTD_VAGRANT_LIBVIRT_DRIVER must be kvm or qemu, not xen/);
    const memory = await vagrant(validate.args, { ...validate.env, AGENTD_VAGRANT_MEMORY: 'lots' });
    assert.notEqual(memory.code, 0);
    assert.match(memory.output, /AGENTD_VAGRANT_MEMORY must be a whole number, not lots/);
    const sync = await vagrant(validate.args, { ...validate.env, AGENTD_VAGRANT_SYNC: 'nfs' });
    assert.notEqual(sync.code, 0);
    assert.match(sync.output, /AGENTD_VAGRANT_SYNC must be rsync, 9p or virtualbox, not nfs/);
    // test:vm's read-write share is a 9p folder; with the default rsync it would be a copy that never
    // comes back.
    const out = await vagrant(validate.args, { ...validate.env, AGENTD_VAGRANT_OUT_DIR: home });
    assert.notEqual(out.code, 0);
    assert.match(out.output, /AGENTD_VAGRANT_OUT_DIR needs AGENTD_VAGRANT_SYNC=9p/);
  });
});
