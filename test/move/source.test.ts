// The source half of a move between machines (docs/fleet.md), run by test:vm at the end of the v2
// and v1 boots (scripts/vm/move-guest.sh): the job (test/move/job.ts) is started in a cgroup, its
// server given more data, then checkpointed by the machine's installed agent (the one `npm run
// setup` started under systemd, on the default socket) with --after killed, and exported; the
// archive, the agent's public key and job.json go to AGENTD_MOVE_OUT for the target half of the
// next boot. Skipped without AGENTD_MOVE_OUT (a plain `npm test`).

import { test, describe, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdirSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { anyHierarchy, FIXTURES, Lab, pidAlive, waitUntil, type TestCgroup } from '../helpers/lab.js';
import { ctl, counterIn, http, SERVER_ENTRIES, SERVER_PORT, SERVER_PY, serverData, waitForServer, type JobRecord } from './job.js';

const OUT = process.env.AGENTD_MOVE_OUT;
const MACHINE = process.env.AGENTD_MOVE_MACHINE ?? 'source';
// AGENTD_MOVE_HIERARCHY: a rehearsal on a hybrid host picks v2 (the guests have one hierarchy each).
const hierarchy = (process.env.AGENTD_MOVE_HIERARCHY as 'v1' | 'v2' | undefined) ?? anyHierarchy();
const lab = new Lab('move-source');

describe(
  `the source half of a move, ${MACHINE}, cgroup ${hierarchy}`,
  { skip: OUT ? false : 'AGENTD_MOVE_OUT is not set (test:vm sets it)' },
  () => {
    let cgroup: TestCgroup;
    let counterFile: string;
    let pids: number[];
    let data: { digest: string; entries: number };
    let summary: { id: string; dir: string; bytes: number; timings: { frozenWindowMs: number } };
    let checkpointMs: number;

    before(async () => {
      mkdirSync(OUT!, { recursive: true });
      cgroup = lab.cgroup(hierarchy, 'job');
      counterFile = join(lab.tempDir('counter'), 'count');
      lab.spawnIn(cgroup, 'perl', [join(FIXTURES, 'criu', 'counter.pl'), counterFile]);
      lab.spawnIn(cgroup, 'python3', ['-c', SERVER_PY, String(SERVER_PORT), String(SERVER_ENTRIES)]);
      await lab.waitForProcesses(cgroup, 2);
      await waitForServer();
      await waitUntil('the counter to count', () => counterIn(counterFile) > 0, 30_000);
    });

    after(async () => {
      await lab.cleanup();
    });

    test('the server holds its random data and what was put into it since', async () => {
      for (const key of ['moved-from', 'note']) {
        const put = await http('PUT', `/${key}`, key === 'note' ? 'put before the checkpoint' : MACHINE);
        assert.equal(put.status, 200, put.text);
      }
      data = await serverData();
      assert.equal(data.entries, SERVER_ENTRIES + 2);
    });

    test('the installed agent checkpoints the job (--after killed): both processes gone, the counter stopped', async () => {
      const t0 = Date.now();
      const r = await ctl(['--json', 'checkpoint', cgroup.path, '--hierarchy', hierarchy, '--after', 'killed']);
      checkpointMs = Date.now() - t0;
      assert.equal(r.code, 0, r.stderr);
      summary = JSON.parse(r.stdout);
      assert.equal(summary.id.length > 0, true);
      // The saved pids, from the manifest (a cgroup may hold a short-lived process besides the two).
      const manifest = JSON.parse(readFileSync(join(summary.dir, 'manifest.json'), 'utf8'));
      pids = manifest.trees
        .flatMap((t: { processes: { pid: number }[] }) => t.processes.map((p) => p.pid))
        .sort((a: number, b: number) => a - b);
      assert.equal(pids.length, 2, `the counter and the server: ${JSON.stringify(manifest.trees)}`);
      for (const pid of pids) await waitUntil(`pid ${pid} to be gone`, () => !pidAlive(pid), 30_000);
      await assert.rejects(http('GET', '/count'), 'the server no longer answers here');
    });

    test('export the archive and the agent key; job.json says what the target must find', async () => {
      const archive = join(OUT!, `${MACHINE}.agentd-archive`);
      const t0 = Date.now();
      const exported = await ctl(['export', summary.id, '-o', archive]);
      const exportMs = Date.now() - t0;
      assert.equal(exported.code, 0, exported.stderr);
      const key = await ctl(['--json', 'key']);
      assert.equal(key.code, 0, key.stderr);
      const keyInfo = JSON.parse(key.stdout);
      const pem = await ctl(['key']);
      assert.match(pem.stdout, /^-----BEGIN PUBLIC KEY-----\n/);
      writeFileSync(join(OUT!, `${MACHINE}.pem`), pem.stdout);
      const record: JobRecord = {
        machine: MACHINE,
        checkpoint: summary.id,
        cgroup: cgroup.path,
        hierarchy,
        counterFile,
        counterAt: counterIn(counterFile),
        serverDigest: data.digest,
        serverEntries: data.entries,
        pids,
        imageBytes: summary.bytes,
        archiveBytes: statSync(archive).size,
        checkpointMs,
        frozenWindowMs: summary.timings.frozenWindowMs,
        exportMs,
        publicKeyFingerprint: keyInfo.fingerprint,
      };
      assert.ok(record.counterAt > 0);
      writeFileSync(join(OUT!, `${MACHINE}.json`), JSON.stringify(record, null, 2) + '\n');
    });
  },
);
