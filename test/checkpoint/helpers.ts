// Shared by the checkpoint tests: a Checkpointer on temporary directories, and counters to watch.

import { readFileSync, readdirSync } from 'node:fs';
import { Checkpointer } from '../../src/checkpoint/index.js';
import { CgroupControl } from '../../src/lock/index.js';
import { resolveCgroup, type CgroupRef } from '../../src/cgroup/index.js';
import type { Lab, TestCgroup } from '../helpers/lab.js';

export function checkpointerIn(lab: Lab, criuPath?: string): Checkpointer {
  return new Checkpointer({ control: new CgroupControl({ runDir: lab.tempDir('run') }), imagesDir: lab.tempDir('images'), criuPath });
}

export function refOf(cgroup: TestCgroup): CgroupRef {
  return resolveCgroup(cgroup.path, { hierarchy: cgroup.hierarchy });
}

export function counterValue(file: string): number {
  return Number(readFileSync(file, 'utf8').trim() || 'NaN');
}

export async function waitUntil(what: string, check: () => boolean, timeoutMs = 10_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    try {
      if (check()) return;
    } catch {
      // not there yet
    }
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 10));
  }
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
