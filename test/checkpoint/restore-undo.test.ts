// Recovery of a restore that died while starting its processes (src/checkpoint/recovery.ts): the
// cgroup is frozen (the restore freezes it around the SIGCONTs), some processes still stopped, one
// continued. The processes are real and the freeze is the kernel's; the dead agent's lock record is
// written here (an agent cannot be SIGKILLed at an exact instant of those few synchronous steps).
// Only what the record names with the right start time dies: a process of someone else in the same
// cgroup, also one whose pid the record names with another start time (a recycled pid), survives,
// and the cgroup it keeps busy is not removed. On v1 the kills land only because recovery thaws.

import { after, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, mkdirSync, readdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { HIERARCHIES, Lab, pidAlive, processState, unavailable, waitUntil, workload } from '../helpers/lab.js';
import { checkpointerIn, counterValue, refOf, waitForCount } from './helpers.js';
import { kernelState } from '../lock/helpers.js';
import { readProcStat } from '../../src/proc/index.js';

const lab = new Lab('restore-undo');
after(() => lab.cleanup());

for (const hierarchy of HIERARCHIES) {
  describe(`undoing a restore cut short while starting, cgroup ${hierarchy}`, { skip: unavailable(hierarchy) }, () => {
    test('recorded processes die (stopped, continued, frozen), another process in the cgroup lives, the busy cgroup stays', async () => {
      const cgroup = lab.cgroup(hierarchy, 'starting');
      const sub = lab.cgroup(hierarchy, 'starting/made');
      const dir = lab.tempDir('restored');
      const other = lab.tempDir('other');
      lab.spawnIn(sub, workload('counter-tree.pl'), [dir, '1']);
      const restored = await lab.waitForProcesses(sub, 2);
      lab.spawnIn(cgroup, workload('counter-tree.pl'), [other, '0']);
      const [decoy] = await lab.waitForProcesses(cgroup, 1);
      await waitForCount(join(dir, 'child-1'));
      await waitForCount(join(other, 'root'));
      // What restoreInOrder left (every process stopped), then startTogether's freeze and one SIGCONT.
      for (const pid of restored) process.kill(pid, 'SIGSTOP');
      await waitUntil('the restored processes to stop', () => restored.every((pid) => processState(pid) === 'T'));
      const checkpointer = checkpointerIn(lab);
      await checkpointer.control.freeze(refOf(cgroup));
      process.kill(restored[0], 'SIGCONT');

      const startTime = (pid: number) => readProcStat(pid)!.startTime;
      const record = {
        pid: 1 << 22, // no such process: the agent is dead
        requestId: 'dead-restore',
        operation: 'restore',
        phase: 'starting',
        cgroup: cgroup.path,
        hierarchy,
        since: new Date().toISOString(),
        imageDir: lab.tempDir('image'),
        createdCgroups: [cgroup.dir, sub.dir], // as if it made both; the outer one is busy
        restoredProcesses: [
          ...restored.map((pid) => ({ pid, startTime: startTime(pid) })),
          { pid: decoy, startTime: startTime(decoy) - 1 },
        ],
      };
      mkdirSync(checkpointer.control.locksDir, { recursive: true, mode: 0o700 });
      writeFileSync(checkpointer.control.lockPath(refOf(cgroup)), JSON.stringify(record) + '\n', { mode: 0o600 });

      const report = await checkpointer.recover();
      assert.equal(report.cgroups.length, 1);
      const [c] = report.cgroups;
      assert.match(c.found, /an interrupted restore .*request dead-restore, phase starting/);
      assert.match(c.action, new RegExp(`undid the restore: killed its 2 restored processes \\(${restored.join(', ')}\\)`));
      assert.match(c.action, new RegExp(`1 recorded \\(${decoy}\\) had ended already or are other processes now`));
      assert.match(c.action, new RegExp(`removed the cgroup it made \\(${sub.dir}\\); could not remove ${cgroup.dir} \\(not empty\\)`));
      for (const pid of restored) assert.ok(!pidAlive(pid) || processState(pid) === 'Z', `restored process ${pid} is gone`);
      assert.ok(!existsSync(sub.dir), 'the emptied cgroup it made is removed');
      assert.ok(existsSync(cgroup.dir), 'the one still in use is not');
      assert.ok(pidAlive(decoy) && processState(decoy) !== 'Z', 'the process it did not restore lives');
      assert.equal(kernelState(cgroup), 'THAWED', 'back to the THAWED the restore found');
      const from = counterValue(join(other, 'root'));
      await waitForCount(join(other, 'root'), from);
      assert.deepEqual(readdirSync(checkpointer.control.locksDir), [], 'the lock file is gone');
      await lab.killIn(cgroup);
    });
  });
}
