// The cgroup freezer: mount discovery, path resolution, and one Freezer interface over the v1 and v2
// drivers. Nothing here knows about locks, CRIU or the daemon.

import { V1Freezer } from './freezer-v1.js';
import { V2Freezer } from './freezer-v2.js';
import type { CgroupRef, Freezer } from './types.js';

export type { CgroupRef, Freezer, FreezerState, FreezerStatus, FreezeOptions, Hierarchy, StateWatch } from './types.js';
export { DEFAULT_FREEZE_TIMEOUT_MS } from './types.js';
export { controllerOf, discoverMounts, parseMountinfo, type CgroupMounts, type CgroupMode } from './mounts.js';
export { resolveCgroup, describeCgroup, type ResolveOptions } from './resolve.js';
export { backoff, waitForPidsGone } from './timing.js';
export { killListed, sigkill } from './kill.js';
export { cgroupOfProcess } from './own-cgroup.js';
export { createPlanned, outermostToMake, planCgroup, removeCreated, type CgroupPlan } from './create.js';
export { joinCgroupsOf } from './join.js';
export { removeEmptyCgroups, yardCgroupDirs } from './stray.js';
export { moveToSubCgroup, selfFrozenDescendants, subCgroupRef, subCgroups, subtreeMembers, type SubtreeMember } from './subtree.js';

export function openFreezer(cgroup: CgroupRef): Freezer {
  return cgroup.hierarchy === 'v1' ? new V1Freezer(cgroup) : new V2Freezer(cgroup);
}

/** The cgroup's freezer state now (the freezer opened and closed again). */
export function freezerStateOf(cgroup: CgroupRef): ReturnType<Freezer['state']> {
  const freezer = openFreezer(cgroup);
  try {
    return freezer.state();
  } finally {
    freezer.close();
  }
}

/** Opens a freezer, runs fn, and closes the freezer's control files whatever happens. */
export async function withFreezer<T>(cgroup: CgroupRef, fn: (freezer: Freezer) => Promise<T> | T): Promise<T> {
  const freezer = openFreezer(cgroup);
  try {
    return await fn(freezer);
  } finally {
    freezer.close();
  }
}
