// What both drivers need to know about a cgroup's ancestors and descendants, and about emptying a
// cgroup and its subtree.

import { existsSync, readdirSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { AgentError } from '../errors/index.js';
import { readControlFile, readPids } from './control-file.js';
import { backoff, waitForPidsGone } from './timing.js';
import type { CgroupRef } from './types.js';

/**
 * The nearest ancestor (below the hierarchy root) whose `file` reads 1: v1 `freezer.self_freezing`,
 * v2 `cgroup.freeze`. That is the cgroup an operator must thaw to thaw this one.
 */
export function nearestFreezingAncestor(cgroup: CgroupRef, file: string, name: string): string | undefined {
  for (let dir = dirname(cgroup.dir); dir.length > cgroup.root.length; dir = dirname(dir)) {
    const path = join(dir, file);
    if (existsSync(path) && readControlFile(path, name).trim() === '1') return dir.slice(cgroup.root.length + 1);
  }
  return undefined;
}

/** The cgroup's directory and every descendant cgroup's, parents before their children. */
export function subtreeDirs(dir: string): string[] {
  const dirs = [dir];
  for (let i = 0; i < dirs.length; i++) {
    let entries;
    try {
      entries = readdirSync(dirs[i], { withFileTypes: true });
    } catch {
      continue; // removed meanwhile: nothing left to kill there
    }
    for (const entry of entries) if (entry.isDirectory()) dirs.push(join(dirs[i], entry.name));
  }
  return dirs;
}

/** Pids of every process in the cgroup and its descendants. */
export function subtreePids(dir: string, name: string): number[] {
  const pids = readPids(join(dir, 'cgroup.procs'), name);
  for (const sub of subtreeDirs(dir).slice(1)) {
    try {
      pids.push(...readPids(join(sub, 'cgroup.procs'), name));
    } catch {
      // a child cgroup removed while we read: its processes are gone with it
    }
  }
  return pids;
}

/**
 * Repeats `killOnce` over the cgroup's processes until it stays empty (tasks forked meanwhile are
 * caught by the next round), then waits until every killed pid is gone from /proc.
 */
export async function killUntilEmpty(
  processes: () => number[],
  killOnce: (pids: number[]) => void,
  timeoutMs: number,
  name: string,
): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  const killed = new Set<number>();
  for (let attempt = 0; ; attempt++) {
    const pids = processes();
    if (pids.length === 0) break;
    pids.forEach((pid) => killed.add(pid));
    killOnce(pids);
    if (Date.now() >= deadline) {
      throw new AgentError('ETIMEDOUT', `cgroup ${name}: processes ${pids.join(', ')} survived SIGKILL`);
    }
    await backoff(attempt);
  }
  if (!(await waitForPidsGone([...killed], deadline))) {
    throw new AgentError('ETIMEDOUT', `cgroup ${name}: killed processes were not reaped in time`);
  }
}

export function sigkill(pids: readonly number[]): void {
  for (const pid of pids) {
    try {
      process.kill(pid, 'SIGKILL');
    } catch {
      // Already gone.
    }
  }
}
