// Where the cgroup hierarchies are mounted, read from /proc/self/mountinfo rather than assumed:
// a pure v2 host has cgroup2 at /sys/fs/cgroup, a hybrid one at /sys/fs/cgroup/unified, and some
// hosts mount the v1 freezer elsewhere (or co-mounted with other controllers).

import { parseMountinfo as mountEntries, readMountinfo, type MountEntry } from '../proc/index.js';
import type { Hierarchy } from './types.js';

export type CgroupMode = 'unified' | 'hybrid' | 'legacy' | 'none';

export interface CgroupMounts {
  readonly mode: CgroupMode;
  /** Mount point of the v1 hierarchy that carries the freezer controller, if any. */
  readonly v1Freezer?: string;
  /** Mount point of the cgroup2 hierarchy, if any. */
  readonly v2?: string;
}

/** The cgroup hierarchies' mount points in a mountinfo text, and the host's cgroup mode. */
export function parseMountinfo(text: string): CgroupMounts {
  return cgroupMounts(mountEntries(text));
}

function cgroupMounts(entries: readonly MountEntry[]): CgroupMounts {
  let v1Freezer: string | undefined;
  let v2: string | undefined;
  let anyV1 = false;
  for (const { root, mountPoint, fsType, superOptions } of entries) {
    // Only a mount of the hierarchy's root lets us see every cgroup of it.
    if (root !== '/') continue;
    if (fsType === 'cgroup2') {
      v2 ??= mountPoint;
    } else if (fsType === 'cgroup') {
      anyV1 = true;
      if (superOptions.includes('freezer')) v1Freezer ??= mountPoint;
    }
  }
  const mode: CgroupMode = v2 && (anyV1 || v1Freezer) ? 'hybrid' : v2 ? 'unified' : anyV1 ? 'legacy' : 'none';
  return { mode, v1Freezer, v2 };
}

let cached: CgroupMounts | undefined;

/** This host's cgroup mounts. Read once: mounts of a running host do not move under us. */
export function discoverMounts(): CgroupMounts {
  cached ??= cgroupMounts(readMountinfo());
  return cached;
}

/**
 * The controller name a hierarchy goes by in /proc/PID/cgroup and in CRIU's `--cgroup-root`:
 * `freezer` for the v1 freezer, the empty name for cgroup2.
 */
export function controllerOf(hierarchy: Hierarchy): string {
  return hierarchy === 'v1' ? 'freezer' : '';
}
