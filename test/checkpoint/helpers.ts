// Shared by the checkpoint tests: a Checkpointer on temporary directories, and counters to watch.

import assert from 'node:assert/strict';
import { readFileSync, readdirSync } from 'node:fs';
import { Checkpointer } from '../../src/checkpoint/index.js';
import { CgroupControl } from '../../src/lock/index.js';
import { isAgentError, type ErrorCode } from '../../src/errors/index.js';
import { join } from 'node:path';
import { resolveCgroup, type CgroupRef, type Hierarchy } from '../../src/cgroup/index.js';
import { waitUntil, workload, type Lab, type TestCgroup } from '../helpers/lab.js';

/** allowedImagesDirs: the directories its checkpoints may name as `imagesDir` besides its own. */
export function checkpointerIn(lab: Lab, criuPath?: string, allowedImagesDirs: string[] = []): Checkpointer {
  return new Checkpointer({
    control: new CgroupControl({ runDir: lab.tempDir('run') }),
    imagesDir: lab.tempDir('images'),
    allowedImagesDirs,
    criuPath,
  });
}

/** fixtures/workloads/counter-tree.pl in a new cgroup: a parent and one child, each counting in `dir`. */
export async function countingTree(
  lab: Lab,
  hierarchy: Hierarchy,
  name: string,
): Promise<{ cgroup: TestCgroup; dir: string; pids: number[] }> {
  const cgroup = lab.cgroup(hierarchy, name);
  const dir = lab.tempDir(name);
  lab.spawnIn(cgroup, workload('counter-tree.pl'), [dir, '1']);
  const pids = (await lab.waitForProcesses(cgroup, 2)).sort((a, b) => a - b);
  await waitForCount(join(dir, 'child-1'), 2);
  return { cgroup, dir, pids };
}

export function refOf(cgroup: TestCgroup): CgroupRef {
  return resolveCgroup(cgroup.path, { hierarchy: cgroup.hierarchy });
}

export function counterValue(file: string): number {
  return Number(readFileSync(file, 'utf8').trim() || 'NaN');
}

/** Waits until the counter in file moves past `from`. */
export function waitForCount(file: string, from = 0): Promise<void> {
  return waitUntil(`${file} to count past ${from}`, () => counterValue(file) > from);
}

/** The pid of a direct child of this process running `comm`, if any. */
export function childNamed(comm: string): number | undefined {
  for (const entry of readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      const stat = readFileSync(`/proc/${entry}/stat`, 'utf8');
      const name = stat.slice(stat.indexOf('(') + 1, stat.lastIndexOf(')'));
      const ppid = Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1]);
      if (name === comm && ppid === process.pid) return Number(entry);
    } catch {
      // exited
    }
  }
  return undefined;
}

/** For assert.rejects: an AgentError with this code whose message matches `pattern`. */
export function rejectsWith(code: ErrorCode, pattern: RegExp) {
  return (err: unknown) => {
    assert.ok(isAgentError(err), `expected an AgentError, got ${String(err)}`);
    assert.equal(err.code, code, err.message);
    assert.match(err.message, pattern);
    return true;
  };
}
