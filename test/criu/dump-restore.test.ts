// A real dump and restore of a small process in a throw-away cgroup, on the v1 freezer and on v2.

import assert from 'node:assert/strict';
import { existsSync, mkdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { isAgentError } from '../../src/errors/index.js';
import { findCriu, readDumpStats, readRestoreStats, runCriuDump, runCriuRestore, type CriuInfo } from '../../src/criu/index.js';
import { Cleanup, sleep, startCounter, TestCgroup, waitGone, type Counter, type Hierarchy } from '../../fixtures/criu/harness.js';
import { HIERARCHIES, unavailable } from '../helpers/lab.js';

const TIMEOUT_MS = 60_000;

function cgroupOf(pid: number, h: Hierarchy): string | undefined {
  const lines = readFileSync(`/proc/${pid}/cgroup`, 'utf8').split('\n');
  const line = lines.find((l) => (h === 'v1' ? /^\d+:freezer:/.test(l) : l.startsWith('0::')));
  return line?.slice(line.indexOf(':', line.indexOf(':') + 1) + 1);
}

for (const h of HIERARCHIES) {
  describe(`CRIU dump and restore, cgroup ${h}`, { skip: unavailable(h) }, () => {
    const cleanup = new Cleanup();
    let criu: CriuInfo;
    let cg: TestCgroup;
    let counter: Counter;
    let imagesDir: string;
    let frozenAt = 0;

    before(async () => {
      criu = await findCriu();
      cg = cleanup.cgroup(TestCgroup.create(h, 'dump'));
      const work = cleanup.tempDir(`dump-${h}`);
      imagesDir = join(work, 'images');
      mkdirSync(imagesDir);
      counter = startCounter(cg, join(work, 'count'));
      cleanup.pid(counter.pid);
    });
    after(() => cleanup.run());

    test('dumping a frozen cgroup leaves it FROZEN and writes plausible stats', async () => {
      await counter.reach(20); // far enough that a counter restarted from 1 could not pass for one going on
      await cg.freeze();
      frozenAt = counter.read();

      const result = await runCriuDump({ criuPath: criu.path, pid: counter.pid, imagesDir, freezeCgroup: cg.dir, timeoutMs: TIMEOUT_MS });
      assert.equal(result.exitCode, 0);
      assert.equal(result.logPath, join(imagesDir, 'dump.log'));
      assert.ok(existsSync(result.logPath));
      assert.deepEqual(result.args.slice(0, 9), [
        'dump',
        '-t',
        String(counter.pid),
        '-D',
        imagesDir,
        '--freeze-cgroup',
        cg.dir,
        '--leave-running',
        '-o',
      ]);

      assert.equal(cg.state(), 'FROZEN');
      await sleep(50);
      assert.equal(counter.read(), frozenAt, 'the counter moved after the dump: the cgroup did not stay frozen');

      const stats = await readDumpStats(imagesDir);
      assert.ok(stats.frozenTime > 0, `frozenTime ${stats.frozenTime}`);
      assert.ok(stats.pagesWritten > 0, `pagesWritten ${stats.pagesWritten}`);
      assert.ok(stats.pagesScanned >= stats.pagesWritten, `scanned ${stats.pagesScanned} < written ${stats.pagesWritten}`);
      assert.ok(stats.memdumpTime > 0 && stats.memwriteTime > 0);
      assert.ok(stats.frozenTime < TIMEOUT_MS * 1000);
    });

    test('restore brings the tree back with its pid, into the same cgroup, counting on', async () => {
      assert.ok(frozenAt > 0, 'needs the dump above');
      // A v1-frozen task ignores SIGKILL until thawed: kill, then thaw. The restore needs the pid
      // free, which it is once /proc/PID is gone, not when cgroup.procs empties.
      process.kill(counter.pid, 'SIGKILL');
      cg.thaw();
      await waitGone(counter.pid);
      assert.equal(counter.read(), frozenAt);

      const result = await runCriuRestore({ criuPath: criu.path, imagesDir, timeoutMs: TIMEOUT_MS });
      assert.equal(result.exitCode, 0);
      assert.equal(result.pid, counter.pid);
      cleanup.pid(result.pid);
      assert.ok(cg.procs().includes(result.pid), `restored pid ${result.pid} is not in ${cg.dir}`);
      assert.equal(cgroupOf(result.pid, h), cg.name);

      const value = await counter.reach(frozenAt + 3);
      assert.ok(value > frozenAt, `counter ${value} did not go on from ${frozenAt}`);

      const stats = await readRestoreStats(imagesDir);
      assert.ok(stats.restoreTime > 0, `restoreTime ${stats.restoreTime}`);
      assert.ok(stats.pagesRestored > 0, `pagesRestored ${stats.pagesRestored}`);
    });

    test('restore with --cgroup-root puts the tree into another cgroup', async () => {
      assert.ok(frozenAt > 0, 'needs the dump above');
      process.kill(counter.pid, 'SIGKILL');
      await waitGone(counter.pid);
      // Created beforehand and thawed: a v1 cgroup that CRIU creates itself comes back FROZEN (the
      // image's state), and restoring into a frozen cgroup never returns.
      const other = cleanup.cgroup(TestCgroup.create(h, 'other'));
      const controller = h === 'v1' ? 'freezer' : '';

      const result = await runCriuRestore({
        criuPath: criu.path,
        imagesDir,
        cgroupRoots: [{ controller, path: other.name }],
        logName: 'restore-other.log',
        timeoutMs: TIMEOUT_MS,
      });
      cleanup.pid(result.pid);
      assert.ok(result.args.includes(`${controller}:${other.name}`));
      assert.ok(other.procs().includes(result.pid), `restored pid ${result.pid} is not in ${other.dir}`);
      assert.deepEqual(cg.procs(), []);
      assert.equal(cgroupOf(result.pid, h), other.name);
      await counter.reach(frozenAt + 3);
    });

    test('restoring into a FROZEN cgroup never returns: the timeout kills CRIU and clears its cgroup yard', async () => {
      assert.ok(frozenAt > 0, 'needs the dump above');
      process.kill(counter.pid, 'SIGKILL');
      await waitGone(counter.pid);
      await cg.freeze();

      await assert.rejects(
        runCriuRestore({ criuPath: criu.path, imagesDir, logName: 'restore-frozen.log', timeoutMs: 3_000 }),
        (err: unknown) => {
          assert.ok(isAgentError(err, 'ETIMEDOUT'), String(err));
          assert.equal((err.details?.removedYards as string[]).length, 1);
          return true;
        },
      );
      const mountinfo = readFileSync('/proc/self/mountinfo', 'utf8');
      assert.ok(!mountinfo.includes('.criu.cgyard.'), 'a cgroup yard is still mounted');
      // CRIU's child froze inside the cgroup; it got the SIGKILL and dies once thawed.
      cg.thaw();
      for (let i = 0; i < 500 && cg.procs().length > 0; i++) await sleep(10);
      assert.deepEqual(cg.procs(), []);
    });
  });
}
