// The cgroups a CRIU restore made that nothing needs. A dump records, for every hierarchy, the
// cgroups below the one each task is in, and a task that sits at the root of a hierarchy (a v1 job's
// place in cgroup2 and in the other v1 controllers of a hybrid host, a v2 job's in the v1 ones)
// has every cgroup of the machine recorded. A restore makes again, empty, each of them that is gone
// by then (docs/criu.md): other jobs' cgroups, long removed. Those it made and that are still
// empty once the restore is over are removed; one that holds a restored process, or that another
// process has moved into, the kernel refuses to remove, and it stays.

import { rmdirSync } from 'node:fs';
import { join } from 'node:path';
import { readMountinfo } from '../proc/index.js';
import { mountOf } from './join.js';

/**
 * The host directory of a cgroup CRIU names by its yard (the directory it mounts the hierarchy on:
 * `unified` for cgroup2, the controllers for a v1 one, `freezer`, `cpu,cpuacct`, `systemd` for
 * name=systemd) and its path in the hierarchy; undefined when no such hierarchy is mounted here, or
 * for a path that climbs out (`..`) or is the root.
 */
export function yardCgroupDir(yard: string, path: string, mounts = readMountinfo()): string | undefined {
  const parts = path.split('/').filter((p) => p !== '' && p !== '.');
  if (parts.length === 0 || parts.includes('..')) return undefined;
  const mount = yard === 'unified' ? mountOf('', mounts) : (mountOf(yard, mounts) ?? mountOf(`name=${yard}`, mounts));
  return mount === undefined ? undefined : join(mount, ...parts);
}

/** The host directories of CRIU's `{ yard, path }` names that are mounted here (mountinfo read once). */
export function yardCgroupDirs(names: readonly { yard: string; path: string }[]): string[] {
  if (names.length === 0) return [];
  const mounts = readMountinfo();
  return names.map((n) => yardCgroupDir(n.yard, n.path, mounts)).filter((dir): dir is string => dir !== undefined);
}

/** Removes each of `dirs` that is an empty cgroup, deepest first; returns the ones removed. */
export function removeEmptyCgroups(dirs: readonly string[]): string[] {
  const removed: string[] = [];
  const deepestFirst = [...new Set(dirs)].sort((a, b) => b.split('/').length - a.split('/').length || b.localeCompare(a));
  for (const dir of deepestFirst) {
    try {
      rmdirSync(dir);
      removed.push(dir);
    } catch {
      // holds processes or cgroups (EBUSY), or is gone: not ours to force
    }
  }
  return removed;
}
