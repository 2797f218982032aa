// Pure logic of subtree checkpoints (docs/nested.md), beside the real ones in nested.test.ts: which
// sub-cgroups a restore makes, how CRIU is told where each tree goes, the lock file names of the
// cgroups below one, and agentctl's lines.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import type { CgroupRef } from '../../src/cgroup/index.js';
import { subCgroupsOf, treeCgroups } from '../../src/checkpoint/subtree.js';
import type { Manifest, TreeRecord } from '../../src/checkpoint/index.js';
import { descendantNamePrefix, lockFileName } from '../../src/lock/lock-name.js';
import { processesBySubCgroup, stateLine } from '../../src/cli/subtree.js';
import type { CgroupStatus } from '../../src/lock/index.js';

const target: CgroupRef = { hierarchy: 'v2', path: 'jobs/q', dir: '/sys/fs/cgroup/unified/jobs/q', root: '/sys/fs/cgroup/unified' };

function tree(root: number, processes: [number, number, string | undefined][]): TreeRecord {
  return {
    index: 0,
    root,
    processes: processes.map(([pid, ppid, cgroup]) => ({ pid, ppid, command: 'x', ...(cgroup === undefined ? {} : { cgroup }) })),
  };
}

function manifest(trees: TreeRecord[], subCgroups?: string[]): Manifest {
  return { id: 'id', cgroup: 'jobs/p', trees, ...(subCgroups ? { subCgroups } : {}) } as unknown as Manifest;
}

test('the sub-cgroups a restore makes: the recorded ones, and any a process was in, parents first', () => {
  assert.deepEqual(subCgroupsOf(manifest([tree(1, [[1, 0, undefined]])])), [], 'a manifest from before subtrees makes none');
  assert.deepEqual(subCgroupsOf(manifest([tree(1, [[1, 0, 'x/y/z']])])), ['x', 'x/y', 'x/y/z']);
  assert.deepEqual(subCgroupsOf(manifest([tree(1, [[1, 0, 'a/b']])], ['d', 'a', 'a/b'])), ['a', 'd', 'a/b']);
});

test('CRIU is told nothing in place; elsewhere, each tree its root sub-cgroup of the target, or ignore when a process is outside it', () => {
  const down = tree(1, [
    [1, 0, ''],
    [2, 1, 'a'],
    [3, 1, 'a/b'],
  ]);
  assert.deepEqual(treeCgroups(down, undefined), { cgroupRoots: [] });
  assert.deepEqual(treeCgroups(down, target), { cgroupRoots: [{ controller: '', path: '/jobs/q' }] });
  assert.deepEqual(treeCgroups(tree(5, [[5, 0, 'c']]), target), { cgroupRoots: [{ controller: '', path: '/jobs/q/c' }] });
  assert.deepEqual(treeCgroups(tree(5, [[5, 0, 'c']]), { ...target, hierarchy: 'v1' }), {
    cgroupRoots: [{ controller: 'freezer', path: '/jobs/q/c' }],
  });
  const up = tree(1, [
    [1, 0, 'a'],
    [2, 1, ''],
  ]);
  assert.deepEqual(treeCgroups(up, target), { cgroupRoots: [], manageCgroups: 'ignore' });
  assert.deepEqual(
    treeCgroups(
      tree(1, [
        [1, 0, 'a'],
        [2, 1, 'ab'],
      ]),
      target,
    ),
    { cgroupRoots: [], manageCgroups: 'ignore' },
    "'ab' is not below 'a'",
  );
  assert.deepEqual(
    treeCgroups(tree(1, [[1, 0, undefined]]), target),
    { cgroupRoots: [{ controller: '', path: '/jobs/q' }] },
    'an old manifest',
  );
});

test("the lock file names of a cgroup's descendants start with its escaped path and a slash; a sibling's do not", () => {
  for (const path of ['jobs', 'a%b', 'ünï/x']) {
    const prefix = descendantNamePrefix({ hierarchy: 'v2', path });
    assert.ok(lockFileName({ hierarchy: 'v2', path: `${path}/c` }).startsWith(prefix));
    assert.ok(lockFileName({ hierarchy: 'v2', path: `${path}/c/d` }).startsWith(prefix));
    assert.ok(!lockFileName({ hierarchy: 'v2', path: `${path}c` }).startsWith(prefix), 'a sibling with a longer name');
    assert.ok(!lockFileName({ hierarchy: 'v2', path }).startsWith(prefix), 'the cgroup itself');
    assert.ok(!lockFileName({ hierarchy: 'v1', path: `${path}/c` }).startsWith(prefix), 'the other hierarchy');
  }
});

test('agentctl state prints the counts after the state word; show lists processes by sub-cgroup, empty ones too', () => {
  const status = { state: 'FROZEN', processes: 1, subtreeProcesses: 4 } as CgroupStatus;
  assert.equal(stateLine(status), 'FROZEN  4 processes in the subtree, 1 in the cgroup itself');
  assert.equal(stateLine({ ...status, processes: 0, subtreeProcesses: 1 }), 'FROZEN  1 process in the subtree, 0 in the cgroup itself');
  assert.equal(
    stateLine({ ...status, state: 'CHECKPOINTING', processes: 1, subtreeProcesses: 1, checkpointingAncestor: 'jobs' }),
    'CHECKPOINTING  1 process in the subtree, 1 in the cgroup itself (a checkpoint of jobs)',
  );
  const lines = processesBySubCgroup(
    manifest(
      [
        tree(1, [
          [1, 0, ''],
          [2, 1, 'a'],
        ]),
      ],
      ['a', 'd'],
    ),
  );
  assert.deepEqual(lines, [
    '  by cgroup',
    '    jobs/p (itself): 1 process',
    '            1  tree 0  x',
    '    jobs/p/a: 1 process',
    '            2  tree 0  x',
    '    jobs/p/d: 0 processes',
  ]);
});
