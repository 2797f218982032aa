// agentctl as an operator runs it (bin/agentctl, an argument array, never a shell) against a real
// agentd on a temporary socket: every command, v1 and v2, --json shapes, the exit code of each error
// code, the stderr line, help and completion, and live progress on a terminal only.

import { test, describe } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync, spawnSync } from 'node:child_process';
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import { builtinModules } from 'node:module';
import { join } from 'node:path';
import { resolveCgroup } from '../../src/cgroup/index.js';
import { EXIT_CODES } from '../../src/cli/index.js';
import { ERROR_CODES } from '../../src/errors/index.js';
import { CgroupControl } from '../../src/lock/index.js';
import {
  anyHierarchy,
  HIERARCHIES,
  pidAlive,
  processState,
  REPO_ROOT,
  unavailable,
  waitUntil,
  workload,
  type TestCgroup,
} from '../helpers/lab.js';
import { counterValue, countingTree, waitForCount } from '../checkpoint/helpers.js';
import { beginCheckpoint, holdWithShellTool, kernelState, killAndWait } from '../lock/helpers.js';
import { AGENTCTL, agentctl, agentctlOnPty, api, startAgent, withAgent, type CliResult } from '../daemon/agent.js';
import { closeFd, listeningSocket } from '../daemon/sockets.js';

const { lab, agent } = withAgent('cli');

/** The form of the agent's checkpoint ids: `20261201T063940Z-4bf4d8` (UTC time, 6 hex digits). */
const CHECKPOINT_ID = /^\d{8}T\d{6}Z-[0-9a-f]{6}$/;
// The progress line redraws itself with ESC [2K (erase the line): a pattern for that escape
// followed by the text drawn, built from a string so the control character is plainly on purpose.
const ERASE_LINE = '\\x1b\\[2K';
const redrawn = (text = '') => new RegExp(`${ERASE_LINE}${text}`);

const ctl = (...args: string[]) => agentctl(['--socket', agent.socket, ...args]);

/** Asserts a failure: exit status, and the one stderr line `agentctl: CODE: message`. */
function failed(result: CliResult, code: string, exit: number, pattern?: RegExp): void {
  assert.equal(result.code, exit, `exit ${result.code}, stderr: ${result.stderr}`);
  assert.match(result.stderr, new RegExp(`^agentctl: ${code}: \\S`), result.stderr);
  if (pattern) assert.match(result.stderr, pattern);
  assert.equal(result.stdout, '');
}

async function sleepers(hierarchy: 'v1' | 'v2', name: string): Promise<TestCgroup> {
  const cgroup = lab.cgroup(hierarchy, name);
  lab.spawnIn(cgroup, 'sleep', ['100000']);
  await lab.waitForProcesses(cgroup, 1);
  return cgroup;
}

function pick(value: Record<string, unknown>, keys: string[]): Record<string, unknown> {
  return Object.fromEntries(keys.map((k) => [k, value[k]]));
}

const counting = (hierarchy: 'v1' | 'v2', name: string) => countingTree(lab, hierarchy, name);

for (const hierarchy of HIERARCHIES) {
  describe(`agentctl state, freeze, thaw on cgroup ${hierarchy}`, { skip: unavailable(hierarchy) }, () => {
    test('prints the state word; --json prints cgroup, hierarchy, path and state', async () => {
      const cgroup = await sleepers(hierarchy, 'words');
      const state = await ctl('state', cgroup.path, '--hierarchy', hierarchy);
      assert.equal(state.code, 0, state.stderr);
      assert.equal(state.stdout, 'THAWED  1 process in the subtree, 1 in the cgroup itself\n');

      const freeze = await ctl('freeze', cgroup.path, '--hierarchy', hierarchy);
      assert.equal(freeze.code, 0, freeze.stderr);
      assert.equal(freeze.stdout, 'FROZEN\n');
      assert.equal(kernelState(cgroup), 'FROZEN');

      const json = await ctl('state', cgroup.dir, '--json');
      assert.equal(json.code, 0, json.stderr);
      const status = JSON.parse(json.stdout);
      assert.equal(status.cgroup, cgroup.path);
      assert.equal(status.hierarchy, hierarchy);
      assert.equal(status.path, cgroup.dir);
      assert.equal(status.state, 'FROZEN');

      const thaw = await ctl('thaw', cgroup.path, '--hierarchy', hierarchy, '--json');
      assert.equal(thaw.code, 0, thaw.stderr);
      assert.equal(JSON.parse(thaw.stdout).state, 'THAWED');
      assert.equal(kernelState(cgroup), 'THAWED');
    });
  });

  describe(`agentctl state, freeze, thaw of many cgroups on cgroup ${hierarchy}`, { skip: unavailable(hierarchy) }, () => {
    test('one line per cgroup in the order given; --json gives every result; a missing one sets the exit status', async () => {
      const [a, b] = [await sleepers(hierarchy, 'many/a'), await sleepers(hierarchy, 'many/b')];
      const freeze = await ctl('freeze', a.path, b.dir, '--hierarchy', hierarchy);
      assert.equal(freeze.code, 0, freeze.stderr);
      assert.equal(freeze.stdout, `CGROUP${' '.repeat(b.dir.length - 4)}STATE\n${a.path.padEnd(b.dir.length)}  FROZEN\n${b.dir}  FROZEN\n`);
      assert.deepEqual([kernelState(a), kernelState(b)], ['FROZEN', 'FROZEN']);

      const missing = `${lab.prefix}/many/none`;
      const state = await ctl('state', a.path, missing, '--hierarchy', hierarchy);
      assert.equal(state.code, EXIT_CODES.ENOENT, state.stderr);
      const lines = state.stdout.trimEnd().split('\n');
      assert.match(lines[1], new RegExp(`^${a.path} +FROZEN {2}1 process in the subtree`));
      assert.match(lines[2], new RegExp(`^${missing} +ENOENT: `));
      assert.match(state.stderr, /^agentctl: ENOENT: cgroup ".*many\/none" does not exist/);

      const thaw = await ctl('thaw', a.path, b.path, '--hierarchy', hierarchy, '--json');
      assert.equal(thaw.code, 0, thaw.stderr);
      const reply = JSON.parse(thaw.stdout);
      assert.deepEqual(
        reply.results.map((r: { name: string; outcome: string; status: { state: string } }) => [r.name, r.outcome, r.status.state]),
        [
          [a.path, 'done', 'THAWED'],
          [b.path, 'done', 'THAWED'],
        ],
      );
      assert.deepEqual([kernelState(a), kernelState(b)], ['THAWED', 'THAWED']);
    });

    test('all or nothing: a CHECKPOINTING one refuses the freeze (exit 4, naming it); --json shows every outcome', async () => {
      const [a, held] = [await sleepers(hierarchy, 'many-busy/a'), await sleepers(hierarchy, 'many-busy/held')];
      const control = new CgroupControl({ runDir: agent.runDir });
      const ref = resolveCgroup(held.path, { hierarchy });
      await control.freeze(ref);
      const hold = beginCheckpoint(control, ref, { requestId: 'cli-many-hold' });
      try {
        failed(
          await ctl('freeze', a.path, held.path, '--hierarchy', hierarchy),
          'EBUSY',
          EXIT_CODES.EBUSY,
          new RegExp(`freeze of 2 cgroups failed at ${hierarchy}:${held.path}: .*nothing was changed`),
        );
        const json = await ctl('freeze', a.path, held.path, '--hierarchy', hierarchy, '--json');
        assert.equal(json.code, EXIT_CODES.EBUSY);
        const { error } = JSON.parse(json.stdout);
        assert.equal(error.code, 'EBUSY');
        assert.deepEqual(
          error.details.results.map((r: { name: string; outcome: string }) => [r.name, r.outcome]),
          [
            [a.path, 'unchanged'],
            [held.path, 'failed'],
          ],
        );
        assert.equal(kernelState(a), 'THAWED');
      } finally {
        await hold.end();
        hold.lease.release();
      }
      await control.thaw(ref);
    });
  });

  describe(`agentctl kill on cgroup ${hierarchy}`, { skip: unavailable(hierarchy) }, () => {
    test('a frozen cgroup with a nested child: every process of the subtree dies; prints the resulting state', async () => {
      const top = await sleepers(hierarchy, 'kill');
      const child = lab.cgroup(hierarchy, 'kill/child');
      lab.spawnIn(child, 'sleep', ['100000']);
      const pids = [...lab.pidsOf(top), ...(await lab.waitForProcesses(child, 1))];
      assert.equal((await ctl('freeze', top.path, '--hierarchy', hierarchy)).code, 0);
      const killed = await ctl('kill', top.path, '--hierarchy', hierarchy);
      assert.equal(killed.code, 0, killed.stderr);
      assert.equal(killed.stdout, `killed ${hierarchy}:${top.path}: no process left, THAWED\n`);
      for (const pid of pids) assert.equal(pidAlive(pid), false, `pid ${pid} is gone when agentctl returns`);
      assert.deepEqual([...lab.pidsOf(top), ...lab.pidsOf(child)], []);
      assert.equal(kernelState(top), 'THAWED');
      // An empty cgroup: a kill is a no-op that still answers the status, as JSON here.
      const again = await ctl('kill', top.dir, '--json');
      assert.equal(again.code, 0, again.stderr);
      assert.deepEqual(pick(JSON.parse(again.stdout), ['cgroup', 'hierarchy', 'state', 'locked']), {
        cgroup: top.path,
        hierarchy,
        state: 'THAWED',
        locked: false,
      });
    });

    test('EBUSY while the cgroup is CHECKPOINTING: nothing is killed', async () => {
      const cgroup = await sleepers(hierarchy, 'kill-busy');
      const [pid] = lab.pidsOf(cgroup);
      const control = new CgroupControl({ runDir: agent.runDir });
      const ref = resolveCgroup(cgroup.path, { hierarchy });
      await control.freeze(ref);
      const hold = beginCheckpoint(control, ref, { requestId: 'cli-test-hold' });
      try {
        assert.match((await ctl('state', cgroup.path, '--hierarchy', hierarchy)).stdout, /^CHECKPOINTING {2}\d+ process/);
        failed(
          await ctl('kill', cgroup.path, '--hierarchy', hierarchy),
          'EBUSY',
          4,
          new RegExp(`${hierarchy}:${cgroup.path} is CHECKPOINTING`),
        );
        assert.ok(pidAlive(pid), 'the process lives');
      } finally {
        await hold.end();
        hold.lease.release();
      }
      await control.thaw(ref);
    });
  });

  describe(`agentctl checkpoint, checkpoints, show, restore, delete on cgroup ${hierarchy}`, { skip: unavailable(hierarchy) }, () => {
    test('a full round trip; --json gives the summary with id and dir', async () => {
      const { cgroup, dir, pids } = await counting(hierarchy, 'roundtrip');
      const made = await ctl('checkpoint', cgroup.path, '--hierarchy', hierarchy, '--after', 'killed', '--json');
      assert.equal(made.code, 0, made.stderr);
      assert.equal(made.stderr, '', 'no progress without a terminal');
      const summary = JSON.parse(made.stdout);
      assert.ok(summary.id && existsSync(join(summary.dir, 'manifest.json')));
      assert.match(summary.id, CHECKPOINT_ID, 'the id has the form the help examples show');
      assert.equal(summary.finalState, 'EMPTY', '--after killed ends EMPTY (README, States)');
      assert.equal(summary.processes, 2);
      for (const pid of pids) await waitUntil(`pid ${pid} to be gone`, () => !pidAlive(pid));
      const frozenAt = counterValue(join(dir, 'child-1'));

      const list = await ctl('checkpoints');
      assert.equal(list.code, 0, list.stderr);
      assert.match(list.stdout, /^ID\s+STATUS\s+CGROUP\s+CREATED\s+SIZE\s+PROCESSES$/m);
      assert.match(list.stdout, new RegExp(`^${summary.id}\\s+good\\s+${hierarchy}:${cgroup.path}\\s`, 'm'));
      // --json prints the API's own answer, {checkpoints: [...]}, not a bare array.
      const listJson = JSON.parse((await ctl('checkpoints', '--json')).stdout);
      assert.deepEqual(Object.keys(listJson), ['checkpoints']);
      assert.deepEqual(listJson, (await api(agent.socket, 'GET', '/v1/checkpoints')).body);
      assert.ok(listJson.checkpoints.some((c: { id: string; status: string }) => c.id === summary.id && c.status === 'good'));

      const show = await ctl('show', summary.id);
      assert.equal(show.code, 0, show.stderr);
      assert.match(show.stdout, new RegExp(`cgroup\\s+${hierarchy}:${cgroup.path} \\(was THAWED\\)`));
      for (const pid of pids) assert.match(show.stdout, new RegExp(`\\b${pid}\\b`));
      assert.match(show.stdout, /^ {2}tree 0 \(root \d+, no TCP connection to lock\)$/m, 'a counting tree holds no socket');
      assert.equal(JSON.parse((await ctl('show', summary.id, '--json')).stdout).id, summary.id);

      const restored = await ctl('restore', summary.id);
      assert.equal(restored.code, 0, restored.stderr);
      assert.match(restored.stdout, new RegExp(`^restored ${summary.id} into ${hierarchy}:${cgroup.path}: pids `));
      assert.deepEqual(
        lab.pidsOf(cgroup).sort((a, b) => a - b),
        pids,
      );
      await waitForCount(join(dir, 'child-1'), frozenAt);

      const removed = await ctl('delete', summary.id);
      assert.equal(removed.code, 0, removed.stderr);
      assert.equal(removed.stdout, `deleted ${summary.id}\n`);
      failed(await ctl('show', summary.id), 'ENOENT', 3);
    });

    test('a human summary by default: id first, then cgroup, dir, processes, size, stopped time, final state', async () => {
      const { cgroup } = await counting(hierarchy, 'human');
      const made = await ctl('checkpoint', cgroup.path, '--hierarchy', hierarchy);
      assert.equal(made.code, 0, made.stderr);
      const [id, ...rest] = made.stdout.trim().split('\n');
      assert.match(id, /^\S+$/);
      assert.match(rest.join('\n'), new RegExp(`cgroup\\s+${hierarchy}:${cgroup.path}`));
      assert.match(rest.join('\n'), /processes\s+2 in 1 tree\n/);
      assert.match(rest.join('\n'), /after\s+prior: now THAWED/);
      assert.equal(kernelState(cgroup), 'THAWED');
    });
  });
}

describe('exit codes', () => {
  const h = anyHierarchy();

  test('the table: every error code has one exit status; EINCONSISTENT counts as a failure (1), not as CRIU (7)', () => {
    assert.deepEqual(Object.keys(EXIT_CODES).sort(), [...ERROR_CODES].sort());
    assert.deepEqual(
      { EINVAL: 2, ENOENT: 3, EBUSY: 4, ETIMEDOUT: 5, EUNREACHABLE: 6, ECRIU: 7, EINCONSISTENT: 1, ENOSPC: 1, EIO: 1 },
      Object.fromEntries(
        ['EINVAL', 'ENOENT', 'EBUSY', 'ETIMEDOUT', 'EUNREACHABLE', 'ECRIU', 'EINCONSISTENT', 'ENOSPC', 'EIO'].map((c) => [
          c,
          EXIT_CODES[c as keyof typeof EXIT_CODES],
        ]),
      ),
    );
  });

  test('2: usage errors and invalid input', async () => {
    failed(await agentctl(['--socket', agent.socket]), 'EINVAL', 2, /name a command/);
    failed(await ctl('frobnicate'), 'EINVAL', 2);
    // A missing argument: the command's usage line and where its help is, not yargs' generic words.
    for (const [command, usage] of [
      ['state', 'state <cgroup\\.\\.>'],
      ['freeze', 'freeze <cgroup\\.\\.>'],
      ['restore', 'restore <id>'],
      ['show', 'show <id>'],
    ]) {
      const missing = await ctl(command);
      failed(
        missing,
        'EINVAL',
        2,
        new RegExp(
          `^agentctl: EINVAL: missing argument: usage: agentctl ${usage} \\(agentctl ${command} --help shows its options and examples\\)\n$`,
        ),
      );
      assert.doesNotMatch(missing.stderr, /Not enough non-option arguments/);
    }
    failed(await ctl('state', 'x', '--bogus'), 'EINVAL', 2, /\(run agentctl state --help\)/);
    failed(await ctl('freeze', 'x', '--hierarchy', 'v9'), 'EINVAL', 2, /Invalid values/);
    failed(await ctl('checkpoint', 'x', '--after', 'never'), 'EINVAL', 2);
    failed(await ctl('state', 'x', '--no-such-option'), 'EINVAL', 2, /Unknown argument/);
    failed(await ctl('--timeout', '0', 'host'), 'EINVAL', 2, /--timeout/);
    // Below a millisecond (the agent's unit) or above its one-day limit: the option is named, not the API field.
    for (const [value, command] of [
      ['0.0001', 'freeze'],
      ['0.0004', 'checkpoint'],
      ['86401', 'restore'],
      ['abc', 'freeze'],
      ['-1', 'state'],
    ]) {
      const result = await ctl(command, 'x', '--timeout', value);
      failed(result, 'EINVAL', 2, /--timeout must be a duration in seconds from 0\.001 \(1 ms\) to 86400/);
      assert.doesNotMatch(result.stderr, /timeoutMs/);
    }
    failed(await ctl('state', '../../etc'), 'EINVAL', 2, /\.\./);
    failed(await ctl('freeze', '/'), 'EINVAL', 2, /root cgroup/);
    failed(await ctl('show', 'a/b'), 'EINVAL', 2, /checkpoint id/);
  });

  test('3: a cgroup or checkpoint that does not exist', async () => {
    failed(await ctl('state', 'agentd-test-no-such-cgroup'), 'ENOENT', 3, /agentd-test-no-such-cgroup/);
    failed(await ctl('thaw', 'agentd-test-no-such-cgroup', '--hierarchy', h), 'ENOENT', 3);
    failed(await ctl('restore', 'no-such-checkpoint'), 'ENOENT', 3);
    failed(await ctl('delete', 'no-such-checkpoint'), 'ENOENT', 3);
  });

  test('4: busy, while another holder has the cgroup lock; the message names the cgroup', async () => {
    const cgroup = await sleepers(h, 'busy');
    assert.equal((await ctl('freeze', cgroup.path, '--hierarchy', h)).code, 0);
    assert.equal((await ctl('thaw', cgroup.path, '--hierarchy', h)).code, 0);
    const tool = await holdWithShellTool(
      lab,
      new CgroupControl({ runDir: agent.runDir }).lockPath(resolveCgroup(cgroup.path, { hierarchy: h })),
    );
    try {
      failed(await ctl('freeze', cgroup.path, '--hierarchy', h), 'EBUSY', 4, new RegExp(`${h}:${cgroup.path}.*busy`));
      failed(await ctl('checkpoint', cgroup.path, '--hierarchy', h), 'EBUSY', 4);
      assert.equal(kernelState(cgroup), 'THAWED');
    } finally {
      await killAndWait(tool);
    }
  });

  test('5: timed out, waiting for the agent (client side) or in the agent (operation limit)', async () => {
    failed(await ctl('--timeout', '0.001', 'host'), 'ETIMEDOUT', 5, /did not answer GET \/v1\/host within 0\.001 s/);
    const { cgroup } = await counting(h, 'timeout');
    const checkpoint = await ctl('checkpoint', cgroup.path, '--hierarchy', h, '--timeout', '0.001');
    failed(checkpoint, 'ETIMEDOUT', 5);
    assert.doesNotMatch(checkpoint.stderr, /did not answer/, "the limit is the checkpoint's, in the agent, not a wait of agentctl");
    assert.equal(kernelState(cgroup), 'THAWED');
  });

  test('6: no agent, a stale socket, or a socket the user may not open; each says how to get through', async () => {
    const none = await agentctl(['--socket', join(lab.tempDir('none'), 'agentd.sock'), 'host']);
    failed(
      none,
      'EUNREACHABLE',
      6,
      /no agent listening at \S+agentd\.sock: there is nothing there; is agentd running\? .*npm run setup.*systemctl start agentd.*bin\/agentd &/,
    );
    failed(
      await agentctl(['--socket', join(lab.tempDir('file'), 'missing-dir', 'x.sock'), 'host']),
      'EUNREACHABLE',
      6,
      /no agent listening at .*is agentd running\?/,
    );
    // A path that is no socket at all: connect(2) refuses it like a stale socket, but it is a mistyped --socket.
    failed(
      await agentctl(['--socket', '/etc/passwd', 'host']),
      'EUNREACHABLE',
      6,
      /^agentctl: EUNREACHABLE: \/etc\/passwd is not a socket \(it is a regular file\): pass the agent's socket with --socket/,
    );
    assert.doesNotMatch((await agentctl(['--socket', '/etc/passwd', 'host'])).stderr, /stale/);
    failed(await agentctl(['--socket', lab.tempDir('dir'), 'host']), 'EUNREACHABLE', 6, /is not a socket \(it is a directory\)/);
    const stalePath = join(lab.tempDir('stale'), 'agentd.sock');
    closeFd(listeningSocket(stalePath)); // a socket file nobody listens on, as a killed agent leaves it
    failed(await agentctl(['--socket', stalePath, 'state', 'x']), 'EUNREACHABLE', 6, /nothing listens on .*stale socket.*npm run setup/);
    const asNobody = await agentctl(['--socket', agent.socket, 'state', 'x'], {
      prefix: ['setpriv', '--reuid=nobody', '--regid=nogroup', '--clear-groups'],
    });
    failed(asNobody, 'EUNREACHABLE', 6, /permission denied on .*group agentd/);
    const viaEnv = await agentctl(['host'], { env: { AGENTD_SOCKET: join(lab.tempDir('env'), 'x.sock') } });
    failed(viaEnv, 'EUNREACHABLE', 6, /env-.*x\.sock/);
  });

  test('7: CRIU failed (here: missing); the cgroup is untouched', async () => {
    const broken = await startAgent(lab, { args: ['--criu', '/nonexistent/criu'] });
    try {
      const cgroup = await sleepers(h, 'nocriu');
      failed(await agentctl(['--socket', broken.socket, 'checkpoint', cgroup.path, '--hierarchy', h]), 'ECRIU', 7, /\/nonexistent\/criu/);
      assert.equal(kernelState(cgroup), 'THAWED');
      const host = await agentctl(['--socket', broken.socket, 'host']);
      assert.equal(host.code, 0, host.stderr);
      assert.match(host.stdout, /^criu\s+unusable: ECRIU: /m);
    } finally {
      assert.equal(await broken.stop(), 0);
    }
  });
});

describe('host, help, version, completion', () => {
  test('agentctl host: a readable summary; --json: the whole object', async () => {
    const host = await ctl('host');
    assert.equal(host.code, 0, host.stderr);
    for (const key of ['host', 'cpu', 'memory', 'images', 'cgroups', 'criu', 'agentd'])
      assert.match(host.stdout, new RegExp(`^${key}\\s`, 'm'));
    assert.match(host.stdout, /^criu\s+\d+\.\d+\S* at \S+ \(criu check: Looks good\)$/m);
    assert.match(
      host.stdout,
      /^\s+self-test: (passed on kernel \S+ at \S+ \(dump and restore, \d+ ms\)|FAILED on kernel .+|not run .+: run npm run setup)$/m,
    );
    const json = JSON.parse((await ctl('host', '--json')).stdout);
    assert.equal(json.agent.pid, agent.pid);
    assert.ok(json.cgroups.mode);
  });

  test('bin/agentctl runs the one-file bundle (scripts/bundle-cli.mjs) of these very sources', () => {
    const bundle = join(REPO_ROOT, 'dist', 'bin', 'agentctl.cjs');
    assert.ok(existsSync(bundle), 'npm run build made the bundle');
    // One CommonJS file: nothing but Node's own modules is required from it, and nothing imported.
    const text = readFileSync(bundle, 'utf8');
    assert.doesNotMatch(text, /^import .* from /m);
    const imports = [...text.matchAll(/\brequire\("([^"]+)"\)/g)].map((m) => m[1]);
    assert.ok(imports.length > 0);
    // zlib and child_process are loaded by the commands that use them, not by every start.
    assert.deepEqual(
      imports.filter((name) => /^(node:)?(zlib|child_process)$/.test(name)),
      [],
    );
    assert.deepEqual(
      imports.filter((name) => !name.startsWith('node:') && !builtinModules.includes(name)),
      [],
    );
    // The same help as the modules it was built from: a bundle left from older sources differs.
    const modules = new URL('../../src/cli/index.js', import.meta.url).href;
    for (const args of [['--help'], ['freeze', '--help'], ['checkpoint', '--help']]) {
      const bundled = execFileSync(process.execPath, [AGENTCTL, ...args], { encoding: 'utf8' });
      const unbundled = execFileSync(
        process.execPath,
        ['--input-type=module', '-e', `const m = await import(${JSON.stringify(modules)}); await m.main(${JSON.stringify(args)});`],
        { encoding: 'utf8' },
      );
      assert.equal(bundled, unbundled, args.join(' '));
    }
  });

  test('a plain command loads neither string-width nor node:assert; --help does (scripts/bundle-cli.mjs loads them on first use)', async () => {
    // A preload that counts Intl.Segmenter constructions (string-width builds one as it loads) and
    // reports, at exit, whether node:assert was loaded at all.
    const preload = join(lab.tempDir('lazy'), 'count.cjs');
    writeFileSync(
      preload,
      [
        "const { writeSync } = require('node:fs');",
        'let built = 0;',
        'const Real = Intl.Segmenter;',
        'Intl.Segmenter = class extends Real { constructor(...a) { super(...a); built++; } };',
        "process.on('exit', () => writeSync(2, `\\nLAZY ${JSON.stringify({ segmenters: built, assert: process.moduleLoadList.includes('NativeModule assert') })}\\n`));",
      ].join('\n'),
    );
    const cgroup = await sleepers(HIERARCHIES[0]!, 'lazy');
    const run = (args: string[]) => {
      const out = spawnSync(process.execPath, ['-r', preload, AGENTCTL, '--socket', agent.socket, ...args], { encoding: 'utf8' });
      assert.equal(out.status, 0, out.stderr);
      return JSON.parse(/^LAZY (.*)$/m.exec(out.stderr)![1]!) as { segmenters: number; assert: boolean };
    };
    assert.deepEqual(run(['state', cgroup.path, '--hierarchy', cgroup.hierarchy]), { segmenters: 0, assert: false });
    assert.deepEqual(run(['state', cgroup.path, '--hierarchy', cgroup.hierarchy, '--json']), { segmenters: 0, assert: false });
    // The preload sees them when they are loaded: help text measures its columns with string-width.
    assert.ok(run(['freeze', '--help']).segmenters > 0);
  });

  test('--help shows examples for every command; --version the package version', async () => {
    const top = await agentctl(['--help']);
    assert.equal(top.code, 0);
    for (const command of [
      'state',
      'freeze',
      'thaw',
      'kill',
      'checkpoint',
      'restore',
      'checkpoints',
      'show',
      'delete',
      'host',
      'completion',
    ]) {
      assert.match(top.stdout, new RegExp(`agentctl ${command}\\b`), command);
    }
    assert.match(top.stdout, /Exit status: 0 ok, 1 other failure, 2 invalid usage/);
    for (const command of ['state', 'freeze', 'thaw', 'kill', 'checkpoint', 'restore', 'checkpoints', 'show', 'delete', 'host']) {
      const help = await agentctl([command, '--help']);
      assert.equal(help.code, 0, command);
      assert.match(help.stdout, /Examples:\n\s+agentctl /, `${command} --help has examples`);
      assert.match(help.stdout, /--socket/, `${command} --help shows the global options`);
    }
    for (const command of ['state', 'freeze', 'thaw', 'kill', 'checkpoint', 'restore']) {
      assert.match((await agentctl([command, '--help'])).stdout, /--hierarchy/, `${command} takes --hierarchy`);
    }
    // Example ids look like the ids the agent makes (the round trip above checks a real one).
    for (const command of ['restore', 'show', 'delete']) {
      const help = (await agentctl([command, '--help'])).stdout;
      const ids = [...help.slice(help.indexOf('Examples:')).matchAll(new RegExp(`agentctl ${command} (\\S+)`, 'g'))].map((m) => m[1]);
      assert.ok(ids.length > 0, `${command} --help has an example with an id`);
      for (const id of ids) assert.match(id, CHECKPOINT_ID, `${command} --help example id ${id}`);
    }
    assert.match(
      (await agentctl(['checkpoint', '--help'])).stdout,
      /--images-dir\s+image root .*it must be one the\s+agent allows \(agentd --allow-images-dir/,
      'checkpoint --images-dir says which directories it may name',
    );
    const version = await agentctl(['--version']);
    assert.equal(version.code, 0);
    assert.match(version.stdout, /^\d+\.\d+\.\d+\n$/);
  });

  test('agentctl completion [bash|zsh|fish]: a script for each shell, --help prints help, the default follows $SHELL', async () => {
    const help = await agentctl(['completion', '--help']);
    assert.equal(help.code, 0, help.stderr);
    assert.match(help.stdout, /^agentctl completion \[shell\]/);
    assert.match(help.stdout, /Examples:\n\s+agentctl completion bash/);
    assert.doesNotMatch(help.stdout, /get-yargs-completions/, '--help is help, not the script');

    const bash = await agentctl(['completion', 'bash']);
    assert.equal(bash.code, 0, bash.stderr);
    assert.match(bash.stdout, /^complete -o bashdefault -o default -F _agentctl_yargs_completions agentctl$/m);
    assert.match(bash.stdout, /agentctl --get-yargs-completions/);
    const zsh = await agentctl(['completion', 'zsh']);
    assert.equal(zsh.code, 0, zsh.stderr);
    assert.match(zsh.stdout, /^#compdef agentctl$/m);
    assert.match(zsh.stdout, /compdef _agentctl_yargs_completions agentctl/);
    const fish = await agentctl(['completion', 'fish']);
    assert.equal(fish.code, 0, fish.stderr);
    assert.match(fish.stdout, /^complete -c agentctl -f -a '\(__agentctl_complete\)'$/m);

    assert.equal((await agentctl(['completion'], { env: { SHELL: '/usr/bin/fish' } })).stdout, fish.stdout);
    assert.equal((await agentctl(['completion'], { env: { SHELL: '/bin/zsh' } })).stdout, zsh.stdout);
    assert.equal((await agentctl(['completion'], { env: { SHELL: '/bin/tcsh' } })).stdout, bash.stdout, 'another shell gets bash');
    failed(await agentctl(['completion', 'tcsh']), 'EINVAL', 2, /Invalid values/);
  });

  /** A directory holding an `agentctl` that runs this checkout's, for the shells to find on PATH. */
  function agentctlOnPath(): string {
    const dir = lab.tempDir('path');
    writeFileSync(join(dir, 'agentctl'), `#!/bin/sh\nexec ${JSON.stringify(process.execPath)} ${JSON.stringify(AGENTCTL)} "$@"\n`, {
      mode: 0o755,
    });
    return `${dir}:${process.env.PATH}`;
  }

  function script(shell: string): string {
    const file = join(lab.tempDir(`completion-${shell}`), `agentctl.${shell}`);
    writeFileSync(file, execFileSync(process.execPath, [AGENTCTL, 'completion', shell], { encoding: 'utf8' }));
    return file;
  }

  test('bash, driven for real: completes commands, options and option values', () => {
    const complete = (words: string[]) =>
      execFileSync(
        'bash',
        [
          '-c',
          `source "$1"; shift; COMP_WORDS=("$@"); COMP_CWORD=$(($# - 1)); _agentctl_yargs_completions; printf '%s\\n' "\${COMPREPLY[@]}"`,
          'bash',
          script('bash'),
          ...words,
        ],
        {
          encoding: 'utf8',
          env: { PATH: agentctlOnPath(), HOME: process.env.HOME },
        },
      )
        .split('\n')
        .filter(Boolean);
    assert.deepEqual(complete(['agentctl', 'che']).sort(), ['checkpoint', 'checkpoints']);
    assert.deepEqual(complete(['agentctl', 'checkpoint', 'x', '--after', '']).sort(), ['frozen', 'killed', 'prior', 'thawed']);
    assert.ok(complete(['agentctl', 'completion', '']).includes('fish'));
  });

  test(
    'fish, driven for real: completes commands with their descriptions, and option values',
    { skip: !hasProgram('fish') && 'fish is not installed here' },
    () => {
      const complete = (line: string) =>
        execFileSync('fish', ['--no-config', '-c', `source ${script('fish')}; complete -C ${JSON.stringify(line)}`], {
          encoding: 'utf8',
          env: { PATH: agentctlOnPath(), HOME: process.env.HOME },
        })
          .split('\n')
          .filter(Boolean);
      const commands = complete('agentctl che');
      assert.deepEqual(commands.map((c) => c.split('\t')[0]).sort(), ['checkpoint', 'checkpoints']);
      assert.match(commands.find((c) => c.startsWith('checkpoint\t')) ?? '', /\tdump every process of a cgroup/);
      assert.deepEqual(complete('agentctl checkpoint x --after ').sort(), ['frozen', 'killed', 'prior', 'thawed']);
      assert.ok(complete('agentctl completion ').includes('zsh'));
    },
  );

  test('dynamic: checkpoint ids from the agent after restore, show and delete; cgroup names under the mounts', async () => {
    const complete = async (...words: string[]) => {
      const result = await agentctl(['--get-yargs-completions', 'agentctl', '--socket', agent.socket, ...words]);
      assert.equal(result.code, 0, result.stderr);
      assert.equal(result.stderr, '', 'a completion never prints an error');
      return result.stdout.split('\n').filter(Boolean);
    };
    const h = anyHierarchy();
    const cgroup = await sleepers(h, 'complete');
    lab.cgroup(h, 'complete/child-a');
    lab.cgroup(h, 'complete/child-b');
    const made = await ctl('checkpoint', cgroup.path, '--hierarchy', h, '--json');
    assert.equal(made.code, 0, made.stderr);
    const { id } = JSON.parse(made.stdout);
    for (const command of ['restore', 'show', 'delete']) {
      assert.ok((await complete(command, '')).includes(id), `${command} offers ${id}`);
      assert.deepEqual(await complete(command, id.slice(0, -2)), [id]);
    }
    assert.deepEqual(await complete('freeze', `${lab.prefix}/comp`), [`${lab.prefix}/complete`]);
    // freeze, thaw and state take many cgroups: the second is completed as the first.
    assert.deepEqual(await complete('freeze', cgroup.path, `${cgroup.path}/child-`), [`${cgroup.path}/child-a`, `${cgroup.path}/child-b`]);
    assert.deepEqual(await complete('kill', '--hierarchy', h, `${cgroup.path}/`), [`${cgroup.path}/child-a`, `${cgroup.path}/child-b`]);
    assert.deepEqual(await complete('state', `${cgroup.dir}/child-`), [`${cgroup.dir}/child-a`, `${cgroup.dir}/child-b`]);
    assert.deepEqual(await complete('restore', id, '--cgroup', `${cgroup.path}/child-b`), [`${cgroup.path}/child-b`]);
    assert.ok((await complete('state', lab.mount(h).slice(0, 5))).includes(`${lab.mount(h)}/`), 'an absolute beginning offers the mounts');
    // Not a positional being completed: yargs completes options and choices as before.
    assert.deepEqual((await complete('checkpoint', cgroup.path, '--after', '')).sort(), ['frozen', 'killed', 'prior', 'thawed']);
    assert.ok((await complete('thaw', cgroup.path, '')).includes('--hierarchy'));
    // No agent: nothing to offer, and no error.
    const none = await agentctl(['--get-yargs-completions', 'agentctl', '--socket', join(lab.tempDir('nocomp'), 'x.sock'), 'show', '']);
    assert.equal(none.code, 0);
    assert.equal(none.stderr, '');
    // Through the bash script, as a shell asks.
    const words = execFileSync(
      'bash',
      [
        '-c',
        `source "$1"; shift; COMP_WORDS=("$@"); COMP_CWORD=$(($# - 1)); _agentctl_yargs_completions; printf '%s\\n' "\${COMPREPLY[@]}"`,
        'bash',
        script('bash'),
        'agentctl',
        'show',
        id.slice(0, 10),
      ],
      {
        encoding: 'utf8',
        env: { PATH: agentctlOnPath(), HOME: process.env.HOME, AGENTD_SOCKET: agent.socket },
      },
    );
    assert.ok(words.split('\n').includes(id), words);
    assert.equal((await ctl('delete', id)).code, 0);
  });

  test('zsh: the script parses (zsh -n)', { skip: !hasProgram('zsh') && 'zsh is not installed here' }, () => {
    execFileSync('zsh', ['-n', script('zsh')]);
  });
});

function hasProgram(name: string): boolean {
  return (process.env.PATH ?? '').split(':').some((dir) => dir && existsSync(join(dir, name)));
}

describe('progress', () => {
  test('on a terminal a checkpoint shows its stages live on stderr; --json shows none', async () => {
    const { cgroup } = await counting(anyHierarchy(), 'tty');
    const run = (extra: string[]) => agentctlOnPty(agent.socket, ['checkpoint', cgroup.path, '--hierarchy', cgroup.hierarchy, ...extra]);
    const live = await run([]);
    assert.equal(live.code, 0, live.output);
    for (const stage of ['freeze', 'dump', 'manifest'])
      assert.match(live.output, new RegExp(`\\r${ERASE_LINE}${stage}`), `stage ${stage} was drawn`);
    assert.match(live.output, /dump\s+tree 1\/1\s+\d/);
    assert.match(live.output, /cgroup\s+\S+:\S+/);
    const quiet = await run(['--json']);
    assert.equal(quiet.code, 0, quiet.output);
    assert.doesNotMatch(quiet.output, redrawn());
    assert.ok(JSON.parse(quiet.output.slice(quiet.output.indexOf('{'))).id);
    assert.equal(
      (await api(agent.socket, 'GET', `/v1/cgroups/state?cgroup=${cgroup.path}&hierarchy=${cgroup.hierarchy}`)).body.state,
      'THAWED',
    );
  });
});

/** agentctl on a pseudo-terminal, as an operator runs it: progress is drawn, Ctrl-C is a real SIGINT. */
async function onTerminal(args: string[]) {
  const { spawn } = await import('node-pty');
  const term = spawn(process.execPath, [AGENTCTL, '--socket', agent.socket, ...args], {
    cols: 200,
    rows: 20,
    env: { PATH: process.env.PATH ?? '', TERM: 'xterm' },
  });
  let output = '';
  const waiters: { pattern: RegExp; resolve: () => void }[] = [];
  term.onData((d) => {
    output += d;
    for (const w of waiters.filter((w) => w.pattern.test(output))) {
      waiters.splice(waiters.indexOf(w), 1);
      w.resolve();
    }
  });
  const exited = new Promise<number>((resolve) => term.onExit(({ exitCode }) => resolve(exitCode)));
  return {
    output: () => output,
    exited,
    /** Ctrl-C typed on the terminal: the line discipline sends SIGINT to agentctl. */
    ctrlC: () => term.write('\x03'),
    /** Resolves once the output matches; fails if agentctl exits first. */
    waitFor(pattern: RegExp, what: string): Promise<void> {
      if (pattern.test(output)) return Promise.resolve();
      return Promise.race([
        new Promise<void>((resolve) => waiters.push({ pattern, resolve })),
        exited.then((code) => {
          throw new Error(`agentctl exited (${code}) before ${what}:\n${output}`);
        }),
      ]);
    },
  };
}

/** A process holding `mib` MiB of memory, so that its dump takes a moment. */
async function withMemory(hierarchy: 'v1' | 'v2', name: string, mib: number): Promise<{ cgroup: TestCgroup; pid: number }> {
  const cgroup = lab.cgroup(hierarchy, name);
  const result = join(lab.tempDir(name), 'result');
  lab.spawnIn(cgroup, workload('memory-pattern.pl'), [String(mib), result]);
  await waitUntil('memory-pattern.pl to fill its memory', () => readFileSync(result, 'utf8').startsWith('ready'), 60_000);
  const [pid] = lab.pidsOf(cgroup);
  return { cgroup, pid };
}

async function agentState(cgroup: TestCgroup): Promise<{ state: string; locked: boolean }> {
  return (await api(agent.socket, 'GET', `/v1/cgroups/state?cgroup=${cgroup.path}&hierarchy=${cgroup.hierarchy}`)).body;
}

describe('Ctrl-C during a checkpoint', () => {
  for (const hierarchy of HIERARCHIES) {
    test(
      `on cgroup ${hierarchy}: says where the cgroup goes, waits for the agent, then exits 130 with the cgroup THAWED`,
      { skip: unavailable(hierarchy) },
      async () => {
        const { cgroup, pid } = await withMemory(hierarchy, 'ctrl-c', 128);
        const run = await onTerminal(['checkpoint', cgroup.path, '--hierarchy', hierarchy]);
        // The dump stage is drawn when CRIU starts on the tree: the cgroup is CHECKPOINTING from here.
        await run.waitFor(redrawn('dump'), 'the dump stage');
        run.ctrlC();
        const code = await run.exited;
        const output = run.output();
        assert.equal(code, 130, output);
        const name = `${hierarchy}:${cgroup.path}`;
        const cancelling = output.indexOf(`agentctl: cancelling: putting ${name} back to THAWED… (Ctrl-C again to leave at once)`);
        const answer = output.search(/agentctl: EINTR: .*cancelled/);
        const final = output.indexOf(`agentctl: cancelled: ${name} is THAWED`);
        assert.ok(cancelling >= 0 && answer > cancelling && final > answer, output);
        // Once agentctl is back, the agent is done: nothing left CHECKPOINTING, the process runs on.
        assert.deepEqual(await agentState(cgroup).then(({ state, locked }) => ({ state, locked })), { state: 'THAWED', locked: false });
        assert.equal(kernelState(cgroup), 'THAWED');
        assert.ok(pidAlive(pid) && processState(pid) !== 'T', `pid ${pid} runs on`);
        const listed = (await api(agent.socket, 'GET', '/v1/checkpoints')).body.checkpoints as { cgroup?: string; status: string }[];
        assert.ok(!listed.some((c) => c.cgroup === cgroup.path && c.status === 'good'), 'no good image of a cancelled checkpoint');
      },
    );
  }

  test('a second Ctrl-C leaves at once; the agent still puts the cgroup back', async () => {
    const { cgroup, pid } = await withMemory(anyHierarchy(), 'ctrl-c-twice', 64);
    const run = await onTerminal(['checkpoint', cgroup.path, '--hierarchy', cgroup.hierarchy]);
    await run.waitFor(redrawn('dump'), 'the dump stage');
    // The agent is stopped so that it cannot finish the cancel between the two Ctrl-Cs: agentctl is
    // then certainly still waiting for it when the second one comes.
    process.kill(agent.pid, 'SIGSTOP');
    try {
      run.ctrlC();
      await run.waitFor(/agentctl: cancelling: putting \S+ back to THAWED…/, 'the cancelling line');
      run.ctrlC();
      assert.equal(await run.exited, 130, run.output());
      assert.match(run.output(), /agentctl: leaving now; the agent finishes the cancel on its own/);
      assert.doesNotMatch(run.output(), /EINTR/);
    } finally {
      process.kill(agent.pid, 'SIGCONT');
    }
    await waitUntilAsync('the agent to put the cgroup back', async () => {
      const { state, locked } = await agentState(cgroup);
      return state === 'THAWED' && !locked;
    });
    assert.ok(pidAlive(pid) && processState(pid) !== 'T');
  });
});

test('POST /v1/operations/{id}/cancel: 404 for an operation that is not running, 400 for an id that cannot be one', async () => {
  const missing = await api(agent.socket, 'POST', '/v1/operations/agentctl-0123456789ab/cancel');
  assert.equal(missing.status, 404);
  assert.equal(missing.body.error.code, 'ENOENT');
  assert.match(missing.body.error.message, /no operation agentctl-0123456789ab is running/);
  const bad = await api(agent.socket, 'POST', `/v1/operations/${encodeURIComponent('a b')}/cancel`);
  assert.equal(bad.status, 400);
  assert.equal(bad.body.error.code, 'EINVAL');
});

async function waitUntilAsync(what: string, check: () => Promise<boolean>, timeoutMs = 30_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await check())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}
