// Privilege: the socket refuses an unprivileged user; the lock and image directories are not
// writable by others (checked by mode, and by an unprivileged user trying to create files there),
// also when they existed beforehand with loose modes; a symlink planted where a lock file, the
// lock directory or an image directory would go is never followed: its target is untouched and
// the error says why.

import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { chmodSync, existsSync, lstatSync, mkdirSync, readdirSync, readFileSync, statSync, symlinkSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { Agent, AGENTCTL, type AgentDirs } from './agent.js';
import { auditImages, kernelState, lockFileOf, setKernel, startWorkload, type Workload } from './checks.js';
import { FaultSuite } from './suite.js';
import type { Json } from '../helpers/json.js';

const suite = new FaultSuite('faults-priv');
const { lab, figures, hierarchies } = suite;
const NOBODY = ['--reuid=nobody', '--regid=nogroup', '--clear-groups'];

/** Runs a command as nobody:nogroup with no supplementary groups. */
function asNobody(command: string, args: string[]): { status: number | null; stdout: string; stderr: string } {
  const r = spawnSync('setpriv', [...NOBODY, command, ...args], { encoding: 'utf8', timeout: 30_000 });
  return { status: r.status, stdout: r.stdout, stderr: r.stderr };
}

/** Dirs under a temporary base that anyone may traverse, so that only the modes under test protect. */
function openDirs(label: string): AgentDirs {
  const dirs = suite.agentDirs(label);
  chmodSync(dirname(dirs.socket), 0o755);
  return dirs;
}

function mode(path: string): number {
  return lstatSync(path).mode & 0o7777;
}

/** Every directory and file under dir, dir included. */
function walk(dir: string): string[] {
  const out = [dir];
  for (const entry of readdirSync(dir, { withFileTypes: true })) {
    const path = join(dir, entry.name);
    out.push(...(entry.isDirectory() ? walk(path) : [path]));
  }
  return out;
}

/** What an unprivileged user can do in dir: the list of attempts that succeeded. */
function nobodyCanWrite(dir: string): string[] {
  const done: string[] = [];
  if (asNobody('touch', [join(dir, 'planted-by-nobody')]).status === 0) done.push(`created a file in ${dir}`);
  if (asNobody('mkdir', [join(dir, 'planted-dir')]).status === 0) done.push(`created a directory in ${dir}`);
  return done;
}

describe('privilege', { skip: hierarchies.length === 0 && 'no freezer hierarchy' }, () => {
  let w: Workload;

  test('the socket refuses an unprivileged user (connect fails with EACCES; agentctl says permission denied), and nothing changes', async (t) => {
    w = await startWorkload(lab, hierarchies[0], 'priv', { children: 0 });
    const dirs = openDirs('socket');
    const agent = await Agent.start(lab, dirs);
    const st = statSync(dirs.socket);
    assert.equal(st.mode & 0o777, 0o660, 'the socket is rw for its owner and group only');
    assert.equal(st.uid, 0);
    assert.equal(mode(dirname(dirs.socket)), 0o755, 'the directory lets anyone reach the socket: only its own mode protects it');

    const connect = asNobody(process.execPath, [
      '-e',
      `require('net').connect(${JSON.stringify(dirs.socket)}).on('connect', () => { console.log('connected'); process.exit(0); }).on('error', (e) => { console.log(e.code); process.exit(3); })`,
    ]);
    figures.requests++;
    assert.equal(connect.stdout.trim(), 'EACCES', connect.stderr);
    const curl = asNobody('curl', [
      '-sS',
      '--unix-socket',
      dirs.socket,
      '-X',
      'POST',
      '-H',
      'Content-Type: application/json',
      '-d',
      JSON.stringify({ cgroup: w.cgroup.path, hierarchy: w.cgroup.hierarchy }),
      'http://agentd/v1/cgroups/freeze',
    ]);
    figures.requests++;
    assert.equal(curl.status, 7, `curl could not connect: ${curl.stderr}`);
    assert.match(curl.stderr, /Permission denied|Couldn't connect/);
    const ctl = asNobody(process.execPath, [AGENTCTL, 'freeze', w.cgroup.path, '--hierarchy', w.cgroup.hierarchy, '--socket', dirs.socket]);
    figures.requests++;
    assert.equal(ctl.status, 6, ctl.stderr);
    assert.match(ctl.stderr, /^agentctl: EUNREACHABLE: permission denied on /);
    assert.equal(kernelState(w.cgroup), 'THAWED', 'the cgroup was not touched');
    assert.ok(await agent.health(), 'root still gets through');
    assert.doesNotMatch(agent.log, /operation=freeze/, 'no freeze ever reached agentd');
    assert.equal(await agent.stop(), 0);
    t.diagnostic(
      `nobody: connect ${connect.stdout.trim()}, curl exit ${curl.status}, agentctl exit ${ctl.status}: ${ctl.stderr.trim().slice(0, 120)}`,
    );
  });

  test('directories agentd creates (run, locks, images, each image) are not writable by others, and nobody cannot create files there', async () => {
    const dirs = openDirs('fresh');
    const agent = await Agent.start(lab, dirs);
    const reply = await agent.request('POST', '/v1/checkpoints', { cgroup: w.cgroup.path, hierarchy: w.cgroup.hierarchy });
    assert.equal(reply.status, 201, reply.text);
    figures.runs++;
    const locks = join(dirs.runDir, 'locks');
    assert.equal(mode(dirs.runDir) & 0o022, 0, `run dir ${dirs.runDir} is ${mode(dirs.runDir).toString(8)}`);
    assert.equal(mode(locks), 0o700);
    assert.equal(mode(dirs.imagesDir), 0o700);
    for (const path of [...walk(locks), ...walk(dirs.imagesDir)]) {
      assert.equal(mode(path) & 0o022, 0, `${path} is ${mode(path).toString(8)}: writable by others`);
      assert.equal(lstatSync(path).uid, 0, `${path} belongs to root`);
    }
    // Released, its lock file is gone (its 0600 mode while held: test/lock/lock-file.test.ts).
    assert.equal(existsSync(lockFileOf(dirs.runDir, w.cgroup)), false, 'the released lock file is removed');
    for (const dir of [dirs.runDir, locks, dirs.imagesDir, reply.json.dir]) assert.deepEqual(nobodyCanWrite(dir), []);
    assert.notEqual(asNobody('cat', [join(reply.json.dir, 'manifest.json')]).status, 0, 'nobody cannot even read an image');
    assert.equal(await agent.stop(), 0);
  });

  test('run and image directories that existed with loose modes (0777) are refused or tightened: nothing goes through a directory others can write', async () => {
    const dirs = openDirs('loose');
    const locks = join(dirs.runDir, 'locks');
    for (const dir of [dirs.runDir, locks, dirs.imagesDir]) {
      mkdirSync(dir, { recursive: true });
      chmodSync(dir, 0o777);
    }
    // What an unprivileged user can plant there beforehand: a directory that looks like a checkpoint.
    const fake = '20260101T000000Z-f00d00';
    assert.equal(asNobody('mkdir', [join(dirs.imagesDir, fake)]).status, 0);
    assert.equal(
      asNobody('sh', [
        '-c',
        `echo '{"formatVersion":1,"id":"${fake}","trees":[],"files":[]}' > ${join(dirs.imagesDir, fake, 'manifest.json')}`,
      ]).status,
      0,
    );
    const agent = await Agent.start(lab, dirs);
    const body = { cgroup: w.cgroup.path, hierarchy: w.cgroup.hierarchy };
    const problems: string[] = [];
    // Each directory must be either tightened (mode go-w, nobody cannot write) or refused with a clear error.
    const judge = (dir: string, reply: { status: number; json: Json; text: string }) => {
      figures.requests++;
      const tightened = (mode(dir) & 0o022) === 0 && nobodyCanWrite(dir).length === 0;
      const refused = reply.status >= 400 && reply.status < 500 && /writable by group or others/.test(reply.json?.error?.message ?? '');
      if (!tightened && !refused)
        problems.push(`${dir} is ${mode(dir).toString(8)} and agentd answered ${reply.status}: ${reply.text.slice(0, 200)}`);
    };
    const freeze = await agent.request('POST', '/v1/cgroups/freeze', body);
    judge(dirs.runDir, freeze);
    judge(locks, freeze);
    if (freeze.status === 200) await agent.request('POST', '/v1/cgroups/thaw', body);
    const checkpoint = await agent.request('POST', '/v1/checkpoints', body);
    judge(dirs.imagesDir, checkpoint);
    const restore = await agent.request('POST', `/v1/checkpoints/${fake}/restore`, {});
    figures.requests++;
    figures.faults += 2;
    if (restore.status < 400 || restore.status > 499)
      problems.push(`restoring a checkpoint nobody planted: ${restore.status} ${restore.text.slice(0, 200)}`);
    assert.deepEqual(problems, []);
    assert.equal(kernelState(w.cgroup), 'THAWED');
    assert.equal(await agent.stop(), 0);
  });

  test("a symlink planted at a lock file's name is not followed: its target is untouched, and the request says why", async () => {
    const dirs = openDirs('lock-link');
    const agent = await Agent.start(lab, dirs);
    const locks = join(dirs.runDir, 'locks');
    mkdirSync(locks, { recursive: true, mode: 0o700 });
    const precious = join(lab.tempDir('precious'), 'passwd-like');
    writeFileSync(precious, 'root:x:0:0\n');
    const sentinels: Workload[] = [w];
    if (hierarchies.length > 1) sentinels.push(await startWorkload(lab, hierarchies[1], 'priv-other', { children: 0 }));
    for (const s of sentinels) {
      for (const target of [precious, join(dirname(precious), 'does-not-exist')]) {
        const lockFile = lockFileOf(dirs.runDir, s.cgroup);
        symlinkSync(target, lockFile);
        for (const [method, path, body] of [
          ['POST', '/v1/cgroups/freeze', { cgroup: s.cgroup.path, hierarchy: s.cgroup.hierarchy }],
          ['POST', '/v1/cgroups/thaw', { cgroup: s.cgroup.path, hierarchy: s.cgroup.hierarchy }],
          ['POST', '/v1/checkpoints', { cgroup: s.cgroup.path, hierarchy: s.cgroup.hierarchy }],
          ['GET', `/v1/cgroups/state?cgroup=${encodeURIComponent(s.cgroup.path)}&hierarchy=${s.cgroup.hierarchy}`, undefined],
        ] as const) {
          const reply = await agent.request(method, path, body);
          figures.requests++;
          figures.faults++;
          assert.equal(reply.status, 403, `${method} ${path}: ${reply.text}`);
          assert.equal(reply.json.error.code, 'EACCES');
          assert.match(reply.json.error.message, /lock file .* is a symbolic link; refusing to follow it/);
        }
        assert.equal(readFileSync(precious, 'utf8'), 'root:x:0:0\n', 'the target is untouched');
        assert.equal(existsSync(join(dirname(precious), 'does-not-exist')), false, 'a dangling target is not created');
        assert.equal(kernelState(s.cgroup), 'THAWED');
        assert.ok(lstatSync(lockFile).isSymbolicLink(), 'the planted link is left for the operator to look at');
        execRm(lockFile);
      }
    }
    assert.deepEqual(auditImages(dirs.imagesDir), { good: [], partial: [], failed: [], bad: [] });
    assert.equal(await agent.stop(), 0);
  });

  test('a symlink planted as the lock directory, or as the image directory, is not followed', async () => {
    const target = lab.tempDir('link-target');
    const dirs = openDirs('dir-links');
    mkdirSync(dirs.runDir, { mode: 0o700 });
    symlinkSync(target, join(dirs.runDir, 'locks'));
    symlinkSync(target, dirs.imagesDir);
    const agent = await Agent.start(lab, dirs);
    const body = { cgroup: w.cgroup.path, hierarchy: w.cgroup.hierarchy };
    const freeze = await agent.request('POST', '/v1/cgroups/freeze', body);
    figures.requests++;
    figures.faults++;
    assert.equal(freeze.status, 403, freeze.text);
    assert.match(
      freeze.json.error.message,
      /lock directory .* is not a directory \(a symlink or file was planted there\); refusing to use it/,
    );
    execRm(join(dirs.runDir, 'locks'));
    const checkpoint = await agent.request('POST', '/v1/checkpoints', body);
    figures.requests++;
    figures.faults++;
    assert.equal(checkpoint.status, 400, checkpoint.text);
    assert.match(checkpoint.json.error.message, /image directory .* is a symlink; refusing to follow it/);
    const asked = await agent.request('POST', '/v1/checkpoints', { ...body, imagesDir: dirs.imagesDir });
    figures.requests++;
    assert.equal(asked.status, 400, asked.text);
    assert.deepEqual(readdirSync(target), [], 'nothing was written through either link');
    assert.equal(kernelState(w.cgroup), 'THAWED');
    assert.equal(await agent.stop(), 0);
  });

  test('a symlink planted as a temporary image directory (.partial-*) is removed by recovery, its target untouched', async () => {
    const dirs = openDirs('partial-link');
    const target = lab.tempDir('partial-target');
    writeFileSync(join(target, 'keep-me'), 'data\n');
    mkdirSync(dirs.imagesDir, { recursive: true, mode: 0o700 });
    symlinkSync(target, join(dirs.imagesDir, '.partial-20260101T000000Z-planted'));
    const agent = await Agent.start(lab, dirs);
    figures.faults++;
    assert.deepEqual(readdirSync(dirs.imagesDir), [], 'the link is gone');
    assert.deepEqual(readdirSync(target), ['keep-me'], 'what it pointed to is untouched');
    assert.match(agent.log, /removed a temporary image directory/);
    await setKernel(w.cgroup, 'THAWED');
    assert.equal(await agent.stop(), 0);
  });

  test('figures', (t) => {
    t.diagnostic(figures.line('privilege'));
  });
});

function execRm(path: string): void {
  spawnSync('rm', ['-f', path]);
}
