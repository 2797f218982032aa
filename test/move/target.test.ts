// The target half of a move between machines (docs/fleet.md), run by test:vm's third boot (v2b: the
// same image booted afresh, so a new kernel, a new agent with a new key). AGENTD_MOVE_IN holds what
// the v2 and v1 boots left (source.test.ts): for each, the archive, the source agent's public key
// and job.json. This machine's installed agent (on the default socket, under systemd) is told to
// trust both keys, imports both archives and restores them:
//   - v2 to v2: the saved pids are first taken by other processes, so a plain restore is refused
//     (EBUSY naming the holders); with --pid-namespace new it is restored, the counter goes on from
//     its value and the server answers with every byte of its data;
//   - v1 to v2: the checkpoint came from a v1 freezer cgroup, this machine has cgroup2 only; the
//     restore is refused, and the refusal is asserted word for word.
// What happened is also written to AGENTD_MOVE_RESULT, one line per move, for test:vm's summary (scripts/vm/results.sh).
// Skipped without AGENTD_MOVE_IN (a plain `npm test`).

import { test, describe, before, after } from 'node:test';
import assert from 'node:assert/strict';
import type { ChildProcess } from 'node:child_process';
import { appendFileSync, existsSync, mkdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { Lab, pidAlive, sleepSync, unavailable, waitUntil, type TestCgroup } from '../helpers/lab.js';
import { discoverMounts } from '../../src/cgroup/index.js';
import { ctl, counterIn, counterText, serverData, waitForServer, type JobRecord } from './job.js';

const IN = process.env.AGENTD_MOVE_IN;
const RESULT = process.env.AGENTD_MOVE_RESULT;
// The installed agent's trusted-keys directory (docs/archive.md); another for a rehearsal's agent.
const TRUSTED = process.env.AGENTD_MOVE_TRUSTED_KEYS ?? '/etc/agentd/trusted-keys';
const lab = new Lab('move-target');

function job(machine: string): JobRecord | undefined {
  const file = join(IN!, `${machine}.json`);
  return existsSync(file) ? (JSON.parse(readFileSync(file, 'utf8')) as JobRecord) : undefined;
}

function report(line: string): void {
  if (RESULT) appendFileSync(RESULT, line + '\n');
}

/**
 * Takes `pid` with a process of ours (sleep), as a busy host would have by chance: the kernel gives
 * a new process the pid after ns_last_pid when it is free, so write pid - 1 there and start one. Any
 * other fork on the machine in between takes it first; then try again. Returns the holder's pid, or
 * of a process that held it already.
 */
const holders: ChildProcess[] = [];
function occupy(pid: number): number {
  for (let attempt = 0; attempt < 50; attempt++) {
    if (pidAlive(pid)) return pid;
    writeFileSync('/proc/sys/kernel/ns_last_pid', String(pid - 1));
    const child = lab.spawn('sleep', ['infinity']);
    holders.push(child);
    if (child.pid === pid) return pid;
    child.kill('SIGKILL');
    sleepSync(10);
  }
  throw new Error(`could not take pid ${pid} in 50 tries`);
}

function commOf(pid: number): string {
  try {
    return readFileSync(`/proc/${pid}/comm`, 'utf8').trim();
  } catch {
    return 'gone';
  }
}

const v2 = IN ? job('v2') : undefined;
const v1 = IN ? job('v1') : undefined;
const why = IN ? unavailable('v2') : 'AGENTD_MOVE_IN is not set (test:vm sets it)';

describe('the target half of a move: import and restore on a second machine', { skip: why }, () => {
  const trustedFiles: string[] = [];
  const made: string[] = [];
  const imported: Record<string, { id: string; dir: string }> = {};

  before(() => {
    assert.ok(v2, `no v2.json in ${IN}: the v2 boot's source half did not run or failed`);
  });

  after(async () => {
    for (const file of trustedFiles) rmSync(file, { force: true });
    // The pid holders: killed and waited for here (the lab's check would catch one still exiting).
    await Promise.all(
      holders.map((child) => {
        if (child.exitCode !== null || child.signalCode !== null) return undefined;
        const gone = new Promise((resolve) => child.once('exit', resolve));
        child.kill('SIGKILL');
        return gone;
      }),
    );
    await lab.cleanup();
    for (const dir of made) rmSync(dir, { recursive: true, force: true });
  });

  test('this agent has a key of its own; it trusts the source agents once their keys are in the trusted-keys directory', async () => {
    const key = await ctl(['--json', 'key']);
    assert.equal(key.code, 0, key.stderr);
    const own = JSON.parse(key.stdout).fingerprint;
    for (const record of [v2, v1]) {
      if (!record) continue;
      assert.notEqual(own, record.publicKeyFingerprint, `${record.machine}'s agent had a key of its own`);
      const file = join(TRUSTED, `move-${record.machine}.pem`);
      writeFileSync(file, readFileSync(join(IN!, `${record.machine}.pem`)), { mode: 0o644 });
      trustedFiles.push(file);
    }
  });

  test('both archives are imported: signed by a trusted key, the same files the source had', async () => {
    for (const record of [v2, v1]) {
      if (!record) continue;
      const archive = join(IN!, `${record.machine}.agentd-archive`);
      const t0 = Date.now();
      const r = await ctl(['--json', 'import', archive]);
      const importMs = Date.now() - t0;
      assert.equal(r.code, 0, r.stderr);
      const summary = JSON.parse(r.stdout);
      assert.equal(summary.from, record.checkpoint);
      // The file holding the source's key (v2's and v1's agents each have one; a rehearsal on one
      // host with one source agent has the same key in both files).
      assert.equal(readFileSync(summary.trustedBy, 'utf8'), readFileSync(join(IN!, `${record.machine}.pem`), 'utf8'));
      assert.equal(summary.signer, record.publicKeyFingerprint);
      assert.equal(summary.bytes, record.imageBytes);
      imported[record.machine] = { id: summary.id, dir: summary.dir };
      report(`${record.machine} import: ${importMs} ms, ${statSync(archive).size} archive bytes, ${record.imageBytes} image bytes`);
    }
  });

  test('v2 to v2: the saved pids are taken here, so a plain restore is refused (EBUSY, exit 4, naming them)', async () => {
    const held = v2!.pids.map(occupy);
    report(`v2b: saved pids ${v2!.pids.join(' ')} taken by ${held.map((p) => `${p} (${commOf(p)})`).join(', ')}`);
    // The counter's file, which the job holds open: made again at the same path and size.
    mkdirSync(dirname(v2!.counterFile), { recursive: true });
    made.push(dirname(v2!.counterFile));
    writeFileSync(v2!.counterFile, counterText(v2!.counterAt));
    const r = await ctl(['restore', imported.v2.id, '--cgroup', lab.cgroup('v2', 'plain').path, '--hierarchy', 'v2']);
    assert.equal(r.code, 4, r.stderr);
    for (const pid of v2!.pids) assert.match(r.stderr, new RegExp(`\\b${pid}\\b`));
    assert.match(r.stderr, /^agentctl: EBUSY: pids of checkpoint \S+ are taken \(/);
    assert.match(r.stderr, /--pid-namespace new/);
    report(`v2->v2b plain restore: ${r.stderr.trim()}`);
  });

  let cgroup: TestCgroup;
  test('v2 to v2 with --pid-namespace new: the job runs again with its saved pids inside, the counter goes on', async () => {
    cgroup = lab.cgroup('v2', 'moved');
    const r = await ctl(['--json', 'restore', imported.v2.id, '--cgroup', cgroup.path, '--hierarchy', 'v2', '--pid-namespace', 'new']);
    assert.equal(r.code, 0, r.stderr);
    const summary = JSON.parse(r.stdout);
    assert.equal(summary.pidNamespace, 'new');
    assert.equal(summary.state, 'THAWED');
    assert.deepEqual(
      summary.processes.map((p: { nsPid: number }) => p.nsPid).sort((a: number, b: number) => a - b),
      [...v2!.pids],
      'inside the namespace, the pids the job had',
    );
    for (const pid of summary.pids) assert.ok(lab.pidsOf(cgroup).includes(pid), `restored pid ${pid} is in ${cgroup.path}`);
    // It goes on from its value: a new counter would start again at 1.
    await waitUntil(`the counter to go on past ${v2!.counterAt}`, () => counterIn(v2!.counterFile) > v2!.counterAt, 60_000);
    report(`v2->v2b restore --pid-namespace new: ${summary.durationMs} ms; counter ${v2!.counterAt} -> ${counterIn(v2!.counterFile)}`);
  });

  test('v2 to v2: the server answers with all its data, the random entries and those put on the other machine', async () => {
    await waitForServer();
    const data = await serverData();
    assert.equal(data.entries, v2!.serverEntries);
    assert.equal(data.digest, v2!.serverDigest);
    report(`v2->v2b server: all ${data.entries} entries, sha256 ${data.digest.slice(0, 16)}... as on v2`);
    report('v2->v2b: passed');
    await lab.killIn(cgroup);
  });

  // Only where this machine has no v1 freezer (v2b): on a hybrid host the v1 checkpoint could restore.
  const v1Skip = !v1 ? 'no v1.json: the v1 boot did not run' : discoverMounts().v1Freezer ? 'this host has a v1 freezer' : false;
  test('v1 to v2: the restore is refused, the checkpoint being of a v1 freezer cgroup', { skip: v1Skip }, async () => {
    // Its counter's file too, so that what refuses it is the layout, not a missing file.
    mkdirSync(dirname(v1!.counterFile), { recursive: true });
    made.push(dirname(v1!.counterFile));
    writeFileSync(v1!.counterFile, counterText(v1!.counterAt));
    const plain = await ctl(['restore', imported.v1.id, '--pid-namespace', 'new']);
    report(`v1->v2b restore: exit ${plain.code}: ${plain.stderr.trim()}`);
    const into = await ctl([
      'restore',
      imported.v1.id,
      '--cgroup',
      lab.cgroup('v2', 'from-v1').path,
      '--hierarchy',
      'v2',
      '--pid-namespace',
      'new',
    ]);
    report(`v1->v2b restore --hierarchy v2: exit ${into.code}: ${into.stderr.trim()}`);
    assert.equal(into.code, 2, into.stderr);
    assert.equal(
      into.stderr,
      `agentctl: EINVAL: checkpoint ${imported.v1.id} was taken in the v1 hierarchy; it cannot be restored into v2\n`,
    );
    assert.notEqual(plain.code, 0, plain.stderr);
    report('v1->v2b: refused (as asserted)');
  });
});
