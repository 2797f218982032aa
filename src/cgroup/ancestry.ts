// What both drivers need to know about a cgroup's ancestors and descendants.

import { existsSync, readdirSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { readControlFile, readPids } from './control-file.js';
import type { CgroupRef } from './types.js';

/**
 * The nearest ancestor (below the hierarchy root) whose `file` reads 1: v1 `freezer.self_freezing`,
 * v2 `cgroup.freeze`. That is the cgroup an operator must thaw to thaw this one.
 */
export function nearestFreezingAncestor(cgroup: CgroupRef, file: string, name: string): string | undefined {
  for (let dir = dirname(cgroup.dir); dir.length > cgroup.root.length; dir = dirname(dir)) {
    if (readIfPresent(join(dir, file), name)?.trim() === '1') return dir.slice(cgroup.root.length + 1);
  }
  return undefined;
}

// Every ancestor below the root has the file (v2 cgroup.freeze, v1 freezer.self_freezing), so it is
// opened without the access() that used to come first: one system call fewer per level on every
// state read, freeze and thaw. Only an ancestor removed meanwhile (and then this cgroup too) lacks it.
function readIfPresent(path: string, name: string): string | undefined {
  try {
    return readControlFile(path, name);
  } catch (err) {
    if (existsSync(path)) throw err;
    return undefined;
  }
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
  return [...readPids(join(dir, 'cgroup.procs'), name), ...descendantPids(dir, name)];
}

/** Pids of every process in the cgroup's descendants (not in the cgroup itself). */
export function descendantPids(dir: string, name: string): number[] {
  const pids: number[] = [];
  for (const sub of subtreeDirs(dir).slice(1)) {
    try {
      pids.push(...readPids(join(sub, 'cgroup.procs'), name));
    } catch {
      // a child cgroup removed while we read: its processes are gone with it
    }
  }
  return pids;
}
