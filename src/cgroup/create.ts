// Making a cgroup that does not exist yet (a restore into a new cgroup) in two steps, so that a
// caller can check everything before it changes anything: planCgroup says what exists and what is
// missing (and the nearest ancestor that exists, whose freezer decides whether a new child starts
// frozen); createPlanned makes only what is missing and says what it made, so that a refusal after
// that can take back exactly its own directories and nobody else's.

import { existsSync, mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { AgentError, systemErrno } from '../errors/index.js';
import { discoverMounts } from './mounts.js';
import { resolveCgroup } from './resolve.js';
import { removeEmptyCgroups } from './stray.js';
import type { CgroupRef, Hierarchy } from './types.js';

export interface CgroupPlan {
  readonly hierarchy: Hierarchy;
  /** The cgroup, when it exists. */
  readonly existing?: CgroupRef;
  /** When it does not: the nearest ancestor that does, unless that is the hierarchy's root. */
  readonly ancestor?: CgroupRef;
  /** Relative to the root, without a leading slash: `jobs/restored`. */
  readonly path: string;
  /** Absolute directories to create, outermost first; empty when the cgroup exists. */
  readonly missing: readonly string[];
}

function mountOf(hierarchy: Hierarchy): string {
  const mounts = discoverMounts();
  const root = hierarchy === 'v1' ? mounts.v1Freezer : mounts.v2;
  if (!root) throw new AgentError('ENOENT', `this host has no cgroup ${hierarchy} freezer hierarchy`);
  return root;
}

/** What making `wanted` (relative, or absolute under the mount) would take. Changes nothing. */
export function planCgroup(wanted: string, hierarchy: Hierarchy): CgroupPlan {
  try {
    const existing = resolveCgroup(wanted, { hierarchy });
    return { hierarchy, existing, path: existing.path, missing: [] };
  } catch (err) {
    if (!(err instanceof AgentError) || err.code !== 'ENOENT') throw err;
  }
  // resolveCgroup has refused '..', NUL, the root and other hierarchies' paths already.
  const root = mountOf(hierarchy);
  const relative = wanted.startsWith(root + '/') ? wanted.slice(root.length + 1) : wanted.replace(/^\/+/, '');
  const segments = relative.split('/').filter((s) => s !== '' && s !== '.');
  let present = segments.length - 1;
  while (present > 0 && !existsSync(join(root, ...segments.slice(0, present)))) present--;
  const ancestor = present > 0 ? resolveCgroup(segments.slice(0, present).join('/'), { hierarchy }) : undefined;
  const missing = segments.slice(present).map((_, i) => join(root, ...segments.slice(0, present + i + 1)));
  return { hierarchy, ancestor, path: segments.join('/'), missing };
}

/**
 * The outermost cgroups PLANS would make (relative to the root, each with a parent that exists at
 * planning time), each once: what a policy on where cgroups may be made has to judge.
 */
export function outermostToMake(plans: readonly CgroupPlan[]): string[] {
  const dirs = new Set<string>();
  for (const plan of plans) {
    if (plan.missing.length === 0) continue;
    const segments = plan.path.split('/');
    dirs.add(segments.slice(0, segments.length - plan.missing.length + 1).join('/'));
  }
  return [...dirs];
}

/**
 * Makes what the plan found missing. `created` lists the directories this call made itself (one
 * made meanwhile by someone else is used, not claimed), innermost last.
 */
export function createPlanned(plan: CgroupPlan): { ref: CgroupRef; created: string[] } {
  if (plan.existing) return { ref: plan.existing, created: [] };
  const created: string[] = [];
  try {
    for (const dir of plan.missing) {
      try {
        mkdirSync(dir);
        created.push(dir);
      } catch (err) {
        if (systemErrno(err) !== 'EEXIST') throw err;
      }
    }
    return { ref: resolveCgroup(plan.path, { hierarchy: plan.hierarchy }), created };
  } catch (err) {
    removeCreated(created);
    throw err;
  }
}

/** Removes cgroups createPlanned made, innermost first; one that is not empty (or gone) is left. */
export function removeCreated(created: readonly string[]): void {
  removeEmptyCgroups(created);
}
