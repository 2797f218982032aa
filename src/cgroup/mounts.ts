// Where the cgroup hierarchies are mounted, read from /proc/self/mountinfo rather than assumed:
// a pure v2 host has cgroup2 at /sys/fs/cgroup, a hybrid one at /sys/fs/cgroup/unified, and some
// hosts mount the v1 freezer elsewhere (or co-mounted with other controllers).

import { readFileSync } from 'node:fs';

export type CgroupMode = 'unified' | 'hybrid' | 'legacy' | 'none';

export interface CgroupMounts {
  readonly mode: CgroupMode;
  /** Mount point of the v1 hierarchy that carries the freezer controller, if any. */
  readonly v1Freezer?: string;
  /** Mount point of the cgroup2 hierarchy, if any. */
  readonly v2?: string;
}

// mountinfo escapes space, tab, newline and backslash in paths as \040, \011, \012, \134.
function unescapeMountPath(field: string): string {
  return field.replace(/\\([0-7]{3})/g, (_, octal: string) => String.fromCharCode(parseInt(octal, 8)));
}

export function parseMountinfo(text: string): CgroupMounts {
  let v1Freezer: string | undefined;
  let v2: string | undefined;
  let anyV1 = false;
  for (const line of text.split('\n')) {
    const separator = line.indexOf(' - ');
    if (separator < 0) continue;
    const before = line.slice(0, separator).split(' ');
    const after = line.slice(separator + 3).split(' ');
    const mountPoint = before[4];
    const fsType = after[0];
    const superOptions = (after[2] ?? '').split(',');
    if (mountPoint === undefined) continue;
    // Only a mount of the hierarchy's root (field 4 is "/") lets us see every cgroup of it.
    if (before[3] !== '/') continue;
    if (fsType === 'cgroup2') {
      v2 ??= unescapeMountPath(mountPoint);
    } else if (fsType === 'cgroup') {
      anyV1 = true;
      if (superOptions.includes('freezer')) v1Freezer ??= unescapeMountPath(mountPoint);
    }
  }
  const mode: CgroupMode = v2 && (anyV1 || v1Freezer) ? 'hybrid' : v2 ? 'unified' : anyV1 ? 'legacy' : 'none';
  return { mode, v1Freezer, v2 };
}

let cached: CgroupMounts | undefined;

/** This host's cgroup mounts. Read once: mounts of a running host do not move under us. */
export function discoverMounts(): CgroupMounts {
  cached ??= parseMountinfo(readFileSync('/proc/self/mountinfo', 'utf8'));
  return cached;
}
