// Moving a checkpoint between two real agents (each its own socket, images directory and signing
// key) with the real CRIU: export to a file and import into an agent that trusts the exporter's key,
// then restore there: the workload's counters go on from where they were. A pipe from one agentctl
// to the other works the same. An agent that does not trust the key refuses (EACCES), unless root
// passes --trust; a member of group agentd is refused even then. An export refuses a corrupt image.

import { test, describe, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { existsSync, openSync, closeSync, readdirSync, readFileSync, writeFileSync, writeSync } from 'node:fs';
import { join } from 'node:path';
import { anyHierarchy, Lab, pidAlive, unavailable, waitUntil } from '../helpers/lab.js';
import { counterValue, countingTree, waitForCount } from '../checkpoint/helpers.js';
import { AGENTCTL, agentctl, api, startAgent, type Agent } from '../daemon/agent.js';

const hierarchy = anyHierarchy();
const lab = new Lab('archive-move');
let a: Agent;
let b: Agent;
let c: Agent;
let trustedByB: string;

/** Runs `agentctl export ID` into `agentctl --socket TO import -` through a real pipe (no shell). */
function pipeExport(
  from: Agent,
  id: string,
  to: Agent,
  importArgs: string[] = [],
): Promise<{ exportCode: number | null; importCode: number | null; stdout: string; stderr: string }> {
  return new Promise((resolve, reject) => {
    const env = { PATH: process.env.PATH, HOME: process.env.HOME };
    const exporter = spawn(process.execPath, [AGENTCTL, '--socket', from.socket, 'export', id], { env, stdio: ['ignore', 'pipe', 'pipe'] });
    const importer = spawn(process.execPath, [AGENTCTL, '--socket', to.socket, 'import', '-', ...importArgs], {
      env,
      stdio: [exporter.stdout, 'pipe', 'pipe'],
    });
    // The importer has the pipe's read end now; this process's copy would keep the exporter's
    // 'close' from ever firing (it waits for every stdio stream of the child to close).
    exporter.stdout.destroy();
    let stdout = '';
    let stderr = '';
    exporter.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    importer.stdout!.on('data', (d: Buffer) => (stdout += d.toString()));
    importer.stderr!.on('data', (d: Buffer) => (stderr += d.toString()));
    let exportCode: number | null | undefined;
    exporter.on('close', (code) => (exportCode = code));
    exporter.on('error', reject);
    importer.on('error', reject);
    importer.on('close', (importCode) => {
      const finish = () => resolve({ exportCode: exportCode ?? null, importCode, stdout, stderr });
      if (exportCode !== undefined) finish();
      else exporter.on('close', finish);
    });
  });
}

function manifestOf(agent: Agent, id: string) {
  return JSON.parse(readFileSync(join(agent.imagesDir, id, 'manifest.json'), 'utf8'));
}

describe(`moving a checkpoint between agents, cgroup ${hierarchy}`, { skip: unavailable(hierarchy) }, () => {
  let id: string;
  let counters: string;
  let pids: number[];

  before(async () => {
    const dirA = lab.tempDir('agent-a');
    a = await startAgent(lab, { dir: dirA, args: ['--key', join(dirA, 'signing-key'), '--trusted-keys', join(dirA, 'trusted')] });
    const key = await agentctl(['--socket', a.socket, 'key']);
    assert.equal(key.code, 0, key.stderr);
    assert.match(key.stdout, /^-----BEGIN PUBLIC KEY-----\n[\s\S]+\n-----END PUBLIC KEY-----\n$/);
    trustedByB = lab.tempDir('trusted-b');
    writeFileSync(join(trustedByB, 'agent-a.pem'), key.stdout, { mode: 0o644 });
    const dirB = lab.tempDir('agent-b');
    b = await startAgent(lab, { dir: dirB, args: ['--key', join(dirB, 'signing-key'), '--trusted-keys', trustedByB] });
    const dirC = lab.tempDir('agent-c');
    c = await startAgent(lab, { dir: dirC, args: ['--key', join(dirC, 'signing-key'), '--trusted-keys', lab.tempDir('trusted-c')] });

    const tree = await countingTree(lab, hierarchy, 'moved');
    counters = tree.dir;
    pids = tree.pids;
    const created = await api(a.socket, 'POST', '/v1/checkpoints', { body: { cgroup: tree.cgroup.path, hierarchy, after: 'killed' } });
    assert.equal(created.status, 201, created.text);
    id = created.body.id;
    for (const pid of pids) await waitUntil(`pid ${pid} to be gone`, () => !pidAlive(pid));
  });

  after(async () => {
    await Promise.all([a?.stop(), b?.stop(), c?.stop()]);
    await lab.cleanup();
  });

  test('the key file is made 0600 on first start; GET /v1/key names it with the PEM, raw key and fingerprint', async () => {
    const reply = await api(a.socket, 'GET', '/v1/key');
    assert.equal(reply.status, 200, reply.text);
    assert.equal(reply.body.algorithm, 'ed25519');
    assert.match(reply.body.raw, /^[0-9a-f]{64}$/);
    assert.match(reply.body.fingerprint, /^sha256:[0-9a-f]{64}$/);
    assert.equal(reply.body.keyFile, join(a.dir, 'signing-key'));
    const { statSync } = await import('node:fs');
    assert.equal(statSync(reply.body.keyFile).mode & 0o777, 0o600);
  });

  test('export to a file, import into an agent trusting the key, restore there: the counters go on', async () => {
    const file = join(lab.tempDir('archive'), 'moved.agentd-archive');
    const exported = await agentctl(['--socket', a.socket, 'export', id, '-o', file]);
    assert.equal(exported.code, 0, exported.stderr);
    assert.match(exported.stdout, new RegExp(`^exported ${id} to ${file} `));
    assert.deepEqual(
      readdirSync(join(file, '..')).filter((n) => n.includes('partial')),
      [],
      'no temporary file is left beside the archive',
    );

    const imported = await agentctl(['--socket', b.socket, 'import', file]);
    assert.equal(imported.code, 0, imported.stderr);
    const newId = imported.stdout.trim();
    assert.match(newId, /^\d{8}T\d{6}Z-[0-9a-f]{6}$/);
    assert.notEqual(newId, id);
    const manifest = manifestOf(b, newId);
    assert.equal(manifest.id, newId);
    assert.equal(manifest.imported.from, id);
    assert.equal(manifest.imported.trustedBy, join(trustedByB, 'agent-a.pem'));
    assert.deepEqual(manifest.files, manifestOf(a, id).files, 'the same image files, sizes and checksums');
    assert.deepEqual(
      readdirSync(b.imagesDir).filter((n) => n.startsWith('.')),
      [],
      'no .importing-* directory is left',
    );

    const frozenAt = counterValue(join(counters, 'child-1'));
    const restored = await agentctl(['--socket', b.socket, '--json', 'restore', newId]);
    assert.equal(restored.code, 0, restored.stderr);
    assert.deepEqual(
      [...JSON.parse(restored.stdout).pids].sort((x: number, y: number) => x - y),
      pids,
    );
    await waitForCount(join(counters, 'child-1'), frozenAt);
    assert.ok(counterValue(join(counters, 'child-1')) > frozenAt);
    const cgroup = lab.cgroup(hierarchy, 'moved');
    await lab.killIn(cgroup);
  });

  test('a pipe: agentctl export ID | agentctl --socket B import - gives the same checkpoint', async () => {
    const r = await pipeExport(a, id, b);
    assert.equal(r.exportCode, 0, r.stderr);
    assert.equal(r.importCode, 0, r.stderr);
    const newId = r.stdout.trim();
    assert.deepEqual(manifestOf(b, newId).files, manifestOf(a, id).files);
    assert.equal(manifestOf(b, newId).imported.from, id);
  });

  test('an agent without the key refuses (EACCES, exit 1, nothing left); root with --trust imports it; a member of group agentd is refused even with --trust', async () => {
    const refused = await pipeExport(a, id, c);
    assert.equal(refused.importCode, 1, refused.stderr);
    assert.match(
      refused.stderr,
      /agentctl: EACCES: archive refused: it is signed by sha256:[0-9a-f]{64}, a key not in \S+; put the exporting agent's key there \(agentctl key on it\), or pass --trust/,
    );
    assert.deepEqual(readdirSync(c.imagesDir), []);

    const file = join(lab.tempDir('archive-c'), 'moved.agentd-archive');
    assert.equal((await agentctl(['--socket', a.socket, 'export', id, '-o', file])).code, 0);
    // As nobody in group agentd (the socket is the group's): --trust is root's only.
    const asMember = await new Promise<{ code: number | null; stderr: string }>((resolve, reject) => {
      const fd = openSync(file, 'r');
      const child = spawn(
        'setpriv',
        ['--reuid=nobody', '--regid=agentd', '--clear-groups', process.execPath, AGENTCTL, '--socket', c.socket, 'import', '-', '--trust'],
        { stdio: [fd, 'ignore', 'pipe'] },
      );
      closeSync(fd);
      let stderr = '';
      child.stderr!.on('data', (d: Buffer) => (stderr += d.toString()));
      child.on('error', reject);
      child.on('close', (code) => resolve({ code, stderr }));
    });
    assert.equal(asMember.code, 1, asMember.stderr);
    assert.match(asMember.stderr, /agentctl: EACCES: only root may import an untrusted archive \(--trust\); this caller is uid \d+/);
    assert.deepEqual(readdirSync(c.imagesDir), []);

    const trusted = await agentctl(['--socket', c.socket, '--json', 'import', file, '--trust']);
    assert.equal(trusted.code, 0, trusted.stderr);
    const summary = JSON.parse(trusted.stdout);
    assert.equal(summary.from, id);
    assert.match(summary.signer, /^sha256:/);
    assert.equal(summary.trustedBy, undefined);
    assert.equal(manifestOf(c, summary.id).imported.trustedBy, undefined);
  });

  test('export refuses a checkpoint that does not match its manifest (EIO, nothing sent), and one that does not exist (ENOENT, exit 3)', async () => {
    const missing = await agentctl(['--socket', a.socket, 'export', '20990101T000000Z-000000', '-o', join(lab.tempDir('none'), 'x')]);
    assert.equal(missing.code, 3, missing.stderr);
    assert.match(missing.stderr, /agentctl: ENOENT: no checkpoint 20990101T000000Z-000000/);

    // A copy to damage: the one imported into C.
    const [copy] = readdirSync(c.imagesDir);
    const pages = manifestOf(c, copy).files.find((f: { path: string }) => f.path.includes('pages-'));
    const fd = openSync(join(c.imagesDir, copy, pages.path), 'r+');
    writeSync(fd, Buffer.from('X'), 0, 1, 100);
    closeSync(fd);
    const out = join(lab.tempDir('corrupt'), 'x.agentd-archive');
    const corrupt = await agentctl(['--socket', c.socket, 'export', copy, '-o', out]);
    assert.equal(corrupt.code, 1, corrupt.stderr);
    assert.match(
      corrupt.stderr,
      new RegExp(`agentctl: EIO: image file ${pages.path.replace(/[.]/g, '\\.')} in \\S+ does not match its manifest`),
    );
    assert.equal(existsSync(out), false);
    assert.deepEqual(readdirSync(join(out, '..')), [], 'no partial archive either');
  });
});
