// A restore cut short by the agent's death leaves nothing half-restored (docs/restart.md): a real
// agentd restores a two-tree checkpoint with the real CRIU under strace (test/helpers/criu-injection.ts),
// whose second `criu restore` is parked at its first PTRACE_SEIZE: tree 1's processes are restored
// and stopped, tree 2's are made but not yet seized. The agent is SIGKILLed there. A new agentd on
// the same directories ends the orphaned CRIU, kills every process of the restore, removes the
// cgroup it made and frees the lock; the checkpoint stays good and restores again.

import { after, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, readFileSync, readdirSync, realpathSync, rmdirSync } from 'node:fs';
import { join } from 'node:path';
import { HIERARCHIES, Lab, pidAlive, processState, unavailable, waitUntil, workload } from '../helpers/lab.js';
import { CriuPlan, parkedAtCall, STRACED_CRIU } from '../helpers/criu-injection.js';
import { api, startAgent } from './agent.js';
import { counterValue, waitForCount } from '../checkpoint/helpers.js';
import { criuProcessesUnder, flockFree, lockFileOf, lockRecord } from '../faults/checks.js';
import { findCriu, removeCgroupYards } from '../../src/criu/index.js';
import { discoverMounts } from '../../src/cgroup/index.js';
import { readMountinfo, readProcStat } from '../../src/proc/index.js';
import type { Json } from '../helpers/json.js';

const lab = new Lab('restore-recovery');
const homes: string[] = [];
after(async () => {
  // Should recovery fail to, the yards a killed CRIU left mounted must go before the lab removes
  // its directories (it cannot remove a mount point).
  for (const home of homes) {
    const run = join(home, 'run');
    for (const work of existsSync(run) ? readdirSync(run).filter((d) => d.startsWith('restore-')) : []) {
      for (const tree of readdirSync(join(run, work))) await removeCgroupYards(join(run, work, tree));
    }
  }
  await lab.cleanup();
});

// CRIU 4.2.1's restore here makes 7 ptrace calls of its own start-up checks (on short-lived
// children), then PTRACE_SEIZEs the first restored task (measured: the same in every run). Parked
// there, the tree's processes exist (waiting in CRIU's restorer) and CRIU holds none of them.
const FIRST_SEIZE = 8;
// Long enough never to end during a test: recovery must end it.
const PARK_US = 600_000_000;

const sortNum = (pids: readonly number[]) => [...pids].sort((a, b) => a - b);

/** The last ptrace(2) request strace logged (the one CRIU is parked in). */
function lastRequest(log: string): string | undefined {
  const lines = readFileSync(log, 'utf8')
    .split('\n')
    .filter((line) => line.startsWith('ptrace('));
  return /^ptrace\((PTRACE_[A-Z_]+)/.exec(lines.at(-1) ?? '')?.[1];
}

for (const hierarchy of HIERARCHIES) {
  describe(`a restore cut short, cgroup ${hierarchy}`, { skip: unavailable(hierarchy) }, () => {
    test('the next agent ends its CRIU, kills what it restored, removes its cgroup; the checkpoint restores again', async () => {
      const source = lab.cgroup(hierarchy, 'source');
      // The restore makes this cgroup; registered with the lab first so it goes even if the test fails.
      const target = lab.cgroup(hierarchy, 'restored');
      rmdirSync(target.dir);
      // On a hybrid host the job sits at the root of the other hierarchy, so its dump records this
      // cgroup, removed after the dump, and tree 1's CRIU makes it again (src/cgroup/stray.ts).
      const other = hierarchy === 'v1' ? 'v2' : 'v1';
      const unrelated = discoverMounts().mode === 'hybrid' ? lab.cgroup(other, 'unrelated') : undefined;
      const dirA = lab.tempDir('tree-a');
      const dirB = lab.tempDir('tree-b');
      lab.spawnIn(source, workload('counter-tree.pl'), [dirA, '1']);
      lab.spawnIn(source, workload('counter-tree.pl'), [dirB, '1']);
      const saved = sortNum(await lab.waitForProcesses(source, 4));
      await waitForCount(join(dirA, 'child-1'));
      await waitForCount(join(dirB, 'child-1'));

      const plan = new CriuPlan(join(lab.tempDir('plan'), 'plan'), 'restore');
      const parkLog = join(lab.tempDir('park'), 'strace.log');
      const home = lab.tempDir('agent');
      homes.push(home);
      const first = await startAgent(lab, { dir: home, args: ['--criu', STRACED_CRIU], env: plan.env((await findCriu()).path) });
      const made = await api(first.socket, 'POST', '/v1/checkpoints', { body: { cgroup: source.path, hierarchy, after: 'killed' } });
      assert.equal(made.status, 201, made.text);
      const id: string = made.body.id;
      const trees: Json[] = (await api(first.socket, 'GET', `/v1/checkpoints/${id}`)).body.trees;
      assert.equal(trees.length, 2, 'two trees');
      for (const pid of saved) await waitUntil(`pid ${pid} to be gone after the checkpoint`, () => !pidAlive(pid));
      const counted = { a: counterValue(join(dirA, 'child-1')), b: counterValue(join(dirB, 'child-1')) };
      if (unrelated) rmdirSync(unrelated.dir);

      // Tree 1 restored plainly, tree 2's CRIU parked before it seizes anything.
      plan.set('-', `inject:delay_enter=${PARK_US}:when=${FIRST_SEIZE} log:${parkLog}`);
      const restoring = api(first.socket, 'POST', `/v1/checkpoints/${id}/restore`, { body: { cgroup: target.path, hierarchy } });
      restoring.catch(() => undefined); // its connection dies with the agent
      await waitUntil("tree 2's CRIU to park", () => parkedAtCall(parkLog) === FIRST_SEIZE, 120_000);
      assert.equal(lastRequest(parkLog), 'PTRACE_SEIZE', 'parked at the first seize of a restored task');
      const imageDir = join(first.imagesDir, id);
      const criu = criuProcessesUnder(imageDir);
      criu.forEach((pid) => lab.track(pid)); // ended by the lab should recovery fail to
      assert.ok(criu.length > 0, 'a CRIU restore runs');

      const lockFile = lockFileOf(first.runDir, target);
      const record = lockRecord(lockFile)!;
      assert.equal(record.operation, 'restore');
      assert.equal(record.phase, 'restoring');
      assert.equal(record.imageDir, imageDir);
      assert.deepEqual(record.createdCgroups, [target.dir]);
      assert.deepEqual(record.restoringTree?.index, 1);
      const tree1: number[] = trees[0].processes.map((p: Json) => p.pid);
      const tree2: number[] = trees[1].processes.map((p: Json) => p.pid);
      assert.deepEqual(sortNum(record.restoredProcesses.map((p: Json) => p.pid)), sortNum(tree1), "tree 1's processes recorded");
      for (const p of record.restoredProcesses) {
        assert.equal(readProcStat(p.pid)?.startTime, p.startTime, `pid ${p.pid}'s start time recorded`);
        assert.equal(processState(p.pid), 'T', `restored process ${p.pid} is stopped`);
      }
      for (const pid of tree2) assert.ok(pidAlive(pid), `tree 2's process ${pid} is being restored`);

      first.child.kill('SIGKILL');
      await first.exited;
      assert.ok(flockFree(lockFile), "the kernel dropped the dead agent's flock");
      assert.ok(criuProcessesUnder(imageDir).length > 0, 'its CRIU outlives it');

      // A new agent on the same directories, with the real CRIU.
      const second = await startAgent(lab, { dir: home });
      for (const pid of [...tree1, ...tree2]) assert.ok(!pidAlive(pid) || processState(pid) === 'Z', `restored process ${pid} is gone`);
      assert.deepEqual(criuProcessesUnder(imageDir), [], 'no CRIU left');
      assert.ok(!existsSync(target.dir), 'the cgroup the restore made is removed');
      assert.ok(flockFree(lockFile) && !existsSync(lockFile), 'the lock is free and its file gone');
      assert.deepEqual(readdirSync(join(home, 'run', 'locks')), []);
      assert.deepEqual(
        readdirSync(join(home, 'run')).filter((d) => d.startsWith('restore-')),
        [],
        'the work dir of the restore is removed',
      );
      const real = realpathSync(home);
      assert.deepEqual(
        readMountinfo()
          .map((m) => m.mountPoint)
          .filter((m) => m.startsWith(real + '/')),
        [],
        'no cgroup yard of its CRIU is left mounted',
      );
      const log = second.log();
      assert.match(log, /recovered a cgroup an interrupted restore left .*an interrupted restore .*phase restoring/);
      assert.match(log, /its CRIU \(pid [\d, ]+\) was still running and held no task yet: killed it/);
      assert.match(log, /undid the restore: killed its 4 restored processes \([\d, ]+\), none had run yet/);
      assert.match(log, /removed the cgroup it made/);
      assert.match(log, /unmounted the cgroup yard its CRIU left and removed its work dir/);
      if (unrelated) {
        assert.ok(!existsSync(unrelated.dir), `${unrelated.dir}, which tree 1's CRIU made again, is removed`);
        assert.match(log, /removed the empty cgroups? its CRIU made again \(.*unrelated/);
      }
      assert.match(log, new RegExp(`checkpoint ${id} is unchanged and can be restored again`));

      const listed = await api(second.socket, 'GET', '/v1/checkpoints');
      assert.deepEqual(
        listed.body.checkpoints.filter((c: Json) => c.id === id).map((c: Json) => c.status),
        ['good'],
      );
      const again = await api(second.socket, 'POST', `/v1/checkpoints/${id}/restore`, { body: { cgroup: target.path, hierarchy } });
      assert.equal(again.status, 200, again.text);
      assert.deepEqual(sortNum(again.body.pids), saved);
      await waitForCount(join(dirA, 'child-1'), counted.a);
      await waitForCount(join(dirB, 'child-1'), counted.b);
      await lab.killIn(target);
      await second.stop();
    });
  });
}
