// A cgroup means its whole subtree: the processes of every cgroup below it, where each one is, and
// which descendants would stop a checkpoint (docs/nested.md). Both hierarchies freeze
// hierarchically, and CRIU's --freeze-cgroup seizes the tasks of every descendant, so what changes
// for a subtree is what we list, record and put back, not how we freeze.

import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { AgentError, fromSystemError } from '../errors/index.js';
import { readControlFile, readPids } from './control-file.js';
import { subtreeDirs } from './ancestry.js';
import { describeCgroup } from './resolve.js';
import type { CgroupRef } from './types.js';

/** A process of the subtree and the cgroup it is in, relative to the subtree's top ('' for the top itself). */
export interface SubtreeMember {
  readonly pid: number;
  readonly sub: string;
}

function relative(ref: CgroupRef, dir: string): string {
  return dir === ref.dir ? '' : dir.slice(ref.dir.length + 1);
}

/** Every process of the cgroup and of its descendants, with its sub-cgroup; the top's own first, then parents before children. */
export function subtreeMembers(ref: CgroupRef): SubtreeMember[] {
  const name = describeCgroup(ref);
  const members: SubtreeMember[] = [];
  for (const dir of subtreeDirs(ref.dir)) {
    let pids: number[];
    try {
      pids = readPids(join(dir, 'cgroup.procs'), name);
    } catch (err) {
      if (dir === ref.dir) throw err;
      continue; // a child cgroup removed while we read: its processes are gone with it
    }
    const sub = relative(ref, dir);
    for (const pid of pids) members.push({ pid, sub });
  }
  return members;
}

/** The descendants of the cgroup, relative to it (empty ones too): shallower first, then by name, so parents come before their children. */
export function subCgroups(ref: CgroupRef): string[] {
  const depth = (sub: string) => sub.split('/').length;
  return subtreeDirs(ref.dir)
    .slice(1)
    .map((dir) => relative(ref, dir))
    .sort((a, b) => depth(a) - depth(b) || (a < b ? -1 : a > b ? 1 : 0));
}

/** The reference of a descendant given relative to the cgroup (it need not exist). */
export function subCgroupRef(ref: CgroupRef, sub: string): CgroupRef {
  if (sub === '') return ref;
  if (sub.split('/').some((part) => part === '' || part === '.' || part === '..')) {
    throw new AgentError('EINVAL', `bad sub-cgroup "${sub}" of ${describeCgroup(ref)}: a relative path without '.', '..' or empty parts`);
  }
  return { ...ref, path: `${ref.path}/${sub}`, dir: join(ref.dir, sub) };
}

/**
 * Descendants that freeze on their own (v1 freezer.self_freezing, v2 cgroup.freeze = 1), relative
 * to the cgroup. CRIU thaws only the cgroup it is given: the tasks of such a descendant stay frozen,
 * and CRIU waits on them until its timeout (docs/nested.md).
 */
export function selfFrozenDescendants(ref: CgroupRef): string[] {
  const file = ref.hierarchy === 'v1' ? 'freezer.self_freezing' : 'cgroup.freeze';
  const name = describeCgroup(ref);
  return subCgroups(ref).filter((sub) => {
    try {
      return readControlFile(join(ref.dir, sub, file), name).trim() === '1';
    } catch {
      return false; // removed meanwhile
    }
  });
}

/** Moves a process (its whole thread group) into a descendant of the cgroup, or into the cgroup itself. */
export function moveToSubCgroup(ref: CgroupRef, sub: string, pid: number): void {
  const target = subCgroupRef(ref, sub);
  const procs = join(target.dir, 'cgroup.procs');
  try {
    // One pid per write(2): cgroup.procs takes a single pid at a time.
    writeFileSync(procs, String(pid));
  } catch (err) {
    throw fromSystemError(err, `failed to move pid ${pid} into cgroup ${describeCgroup(target)} (writing ${procs})`);
  }
}
