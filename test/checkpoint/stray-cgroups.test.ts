// The cgroups a restore's CRIU makes again that nothing needs (src/cgroup/stray.ts): a job in one
// hierarchy sits at the root of the other on a hybrid host, so its dump records every cgroup there,
// and CRIU's restore makes again, empty, those removed since. Real cgroups, real CRIU. Runs where
// both hierarchies are mounted (a hybrid host): on a pure v2 or legacy v1 machine a job's dump
// records only its own subtree of the freezer hierarchy, and there is no other hierarchy of ours
// to leave a stray in.

import { after, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, readFileSync, rmdirSync } from 'node:fs';
import { join } from 'node:path';
import { createdCgroupDirs } from '../../src/criu/index.js';
import { discoverMounts, type Hierarchy } from '../../src/cgroup/index.js';
import { Lab, pidAlive, unavailable } from '../helpers/lab.js';
import { checkpointerIn, counterValue, countingTree, refOf, waitForCount } from './helpers.js';

const lab = new Lab('stray');
after(() => lab.cleanup());

test("CRIU's restore log: the cgroups it made, by yard and path", () => {
  const log = [
    '(00.098160) cg: Created cgroup dir unified//agentd-exp-other',
    '(00.098191) cg: Restoring cgroup property value [domain] to [unified//agentd-exp-other/cgroup.type]',
    '(00.098273) cg: Created cgroup dir unified//agentd-exp-other/child',
    '(00.035416) cg: Created cgroup dir freezer//job 1',
    '(00.035417) cg: Created cgroup dir cpu,cpuacct/flat',
  ].join('\n');
  assert.deepEqual(createdCgroupDirs(log), [
    { yard: 'unified', path: '/agentd-exp-other' },
    { yard: 'unified', path: '/agentd-exp-other/child' },
    { yard: 'freezer', path: '/job 1' },
    { yard: 'cpu,cpuacct', path: '/flat' },
  ]);
});

const hybrid = discoverMounts().mode === 'hybrid';
const other = (h: Hierarchy): Hierarchy => (h === 'v1' ? 'v2' : 'v1');

for (const hierarchy of ['v1', 'v2'] as const) {
  describe(
    `a restore of a ${hierarchy} job leaves no cgroup of the ${other(hierarchy)} hierarchy behind`,
    {
      skip: unavailable(hierarchy) || unavailable(other(hierarchy)) || (!hybrid && 'needs a hybrid host (both hierarchies mounted)'),
    },
    () => {
      test('a cgroup removed after the dump is not there after the restore; the job runs in its own', async () => {
        // Made before the dump, so that the dump records it (and its child): someone else's cgroup.
        const unrelated = lab.cgroup(other(hierarchy), `unrelated-${hierarchy}`);
        const child = lab.cgroup(other(hierarchy), `unrelated-${hierarchy}/child`);
        const { cgroup, dir, pids } = await countingTree(lab, hierarchy, `job-${hierarchy}`);
        const checkpointer = checkpointerIn(lab);
        const summary = await checkpointer.checkpoint(refOf(cgroup), { after: 'killed' });
        rmdirSync(child.dir);
        rmdirSync(unrelated.dir);
        const dumped = counterValue(join(dir, 'child-1'));
        const restored = await checkpointer.restore(summary.id);
        assert.deepEqual(
          [...restored.pids].sort((a, b) => a - b),
          pids,
        );
        assert.ok(restored.pids.every(pidAlive));
        assert.equal(existsSync(unrelated.dir), false, `${unrelated.dir} was made again by CRIU and left behind`);
        assert.deepEqual(
          readFileSync(join(cgroup.dir, 'cgroup.procs'), 'utf8')
            .trim()
            .split('\n')
            .map(Number)
            .sort((a, b) => a - b),
          pids,
        );
        await waitForCount(join(dir, 'child-1'), dumped);
        await lab.killIn(cgroup);
      });
    },
  );
}
