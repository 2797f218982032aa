// A checkpoint of a cgroup covers its whole subtree (docs/nested.md): the processes of every cgroup
// below it are dumped with it, each recorded with the sub-cgroup it was in, and a restore makes the
// sub-cgroups again and puts each process back in its own.
//
// What CRIU 4.2.1 does, measured on v1 and v2 (docs/nested.md): `--freeze-cgroup P` seizes the tasks
// of every cgroup below P too, and the image records each task's cgroup. Restored in place, each task
// goes back to its own cgroup. With `--cgroup-root CONTROLLER:/Q` the cgroup of the tree's ROOT task
// becomes Q and the others keep their place relative to it, so a tree whose root was in P/c needs
// `/Q/c`, not `/Q`. A v1 cgroup CRIU makes itself comes back FROZEN (docs/criu.md), so agentd makes
// every sub-cgroup before CRIU runs, and moves any process that still came back elsewhere while
// every tree is stopped, before anything runs.

import {
  controllerOf,
  createPlanned,
  describeCgroup,
  moveToSubCgroup,
  freezerStateOf,
  planCgroup,
  selfFrozenDescendants,
  subtreeMembers,
  type CgroupPlan,
  type CgroupRef,
  type SubtreeMember,
} from '../cgroup/index.js';
import type { CriuCgroupRoot, ManageCgroupsMode } from '../criu/index.js';
import { AgentError } from '../errors/index.js';
import type { Manifest, TreeRecord } from './types.js';

/** Refuses a subtree with a descendant that freezes on its own: CRIU would wait on its tasks until it times out. */
export function refuseSelfFrozenDescendants(ref: CgroupRef, name: string): void {
  const frozen = selfFrozenDescendants(ref);
  if (frozen.length > 0) {
    const list = frozen.map((sub) => `${ref.path}/${sub}`).join(', ');
    throw new AgentError(
      'EBUSY',
      `cgroup ${name}: ${list} below it ${frozen.length === 1 ? 'is' : 'are'} frozen on ${frozen.length === 1 ? 'its' : 'their'} own; CRIU thaws only ${ref.path} while it seizes the tasks, so thaw ${list} first`,
    );
  }
}

/** The trees with each process's sub-cgroup recorded (a process not listed is the cgroup's own). */
export function withSubCgroups(trees: readonly TreeRecord[], members: readonly SubtreeMember[]): TreeRecord[] {
  const subOf = new Map(members.map((m) => [m.pid, m.sub]));
  return trees.map((tree) => ({ ...tree, processes: tree.processes.map((p) => ({ ...p, cgroup: subOf.get(p.pid) ?? '' })) }));
}

/** The sub-cgroups a restore must make: as recorded, or (older manifests) those its processes were in. */
export function subCgroupsOf(manifest: Manifest): string[] {
  const subs = new Set(manifest.subCgroups ?? []);
  for (const tree of manifest.trees) {
    for (const p of tree.processes) {
      const parts = (p.cgroup ?? '').split('/').filter(Boolean);
      for (let i = 1; i <= parts.length; i++) subs.add(parts.slice(0, i).join('/'));
    }
  }
  // Parents before children: a path's parent is a prefix of it, hence fewer parts.
  return [...subs].sort((a, b) => a.split('/').length - b.split('/').length || a.localeCompare(b));
}

/**
 * What making the target's sub-cgroups would take, checked but not made: each one that exists must
 * be THAWED (CRIU cannot restore into a frozen cgroup, src/criu/restore.ts).
 */
export function planSubCgroups(manifest: Manifest, targetPath: string, hierarchy: Manifest['hierarchy']): CgroupPlan[] {
  return subCgroupsOf(manifest).map((sub) => {
    const plan = planCgroup(`${targetPath}/${sub}`, hierarchy);
    if (plan.existing) {
      const state = freezerStateOf(plan.existing);
      if (state !== 'THAWED') {
        const name = describeCgroup(plan.existing);
        throw new AgentError('EBUSY', `cgroup ${name} is ${state}: CRIU cannot restore into a frozen cgroup; thaw it first`);
      }
    }
    return plan;
  });
}

/** Makes the planned sub-cgroups, outermost first; returns the directories made (for removeCreated). */
export function createSubCgroups(plans: readonly CgroupPlan[]): string[] {
  const created: string[] = [];
  for (const plan of plans) created.push(...createPlanned(plan).created);
  return created;
}

/** The sub-cgroup of a tree's root, where CRIU's --cgroup-root for that tree must point below the target. */
export function rootSubCgroup(tree: TreeRecord): string {
  return tree.processes.find((p) => p.pid === tree.root)?.cgroup ?? '';
}

function within(sub: string, base: string): boolean {
  return base === '' || sub === base || sub.startsWith(base + '/');
}

/**
 * How CRIU is told where a tree's processes go. In place (no target given): nothing, the image's
 * own paths are right. Elsewhere: `--cgroup-root` at the root's own sub-cgroup of the target, which
 * places the rest of the tree relative to it. A tree with a process outside its root's sub-cgroup
 * (a child in P while its parent is in P/a) cannot be described that way: CRIU 4.2.1 then makes up
 * a path and fails (`Can't move PID into .../Q/a-moved/a/cgroup.procs`, measured), so CRIU leaves
 * such a tree's cgroups alone (`--manage-cgroups=ignore`, the tasks come back stopped in CRIU's own
 * cgroups) and putBack moves every process into its sub-cgroup before any runs.
 */
export function treeCgroups(
  tree: TreeRecord,
  elsewhere: CgroupRef | undefined,
): { cgroupRoots: CriuCgroupRoot[]; manageCgroups?: ManageCgroupsMode } {
  if (!elsewhere) return { cgroupRoots: [] };
  const base = rootSubCgroup(tree);
  if (!tree.processes.every((p) => within(p.cgroup ?? '', base))) return { cgroupRoots: [], manageCgroups: 'ignore' };
  return { cgroupRoots: [{ controller: controllerOf(elsewhere.hierarchy), path: `/${elsewhere.path}${base ? `/${base}` : ''}` }] };
}

/**
 * Puts every restored process in its own sub-cgroup of the target, while all are still stopped.
 * CRIU placed them itself in every case measured but one: a tree restored with
 * `--manage-cgroups=ignore` (treeCgroups), whose processes this moves. Returns the pids moved;
 * ECRIU naming any process that is not in its own sub-cgroup afterwards.
 */
export function putBack(target: CgroupRef, manifest: Manifest, hostPid: (saved: number) => number = (saved) => saved): number[] {
  // In a new PID namespace (./pid-placement.ts) a process's host pid is not its saved one.
  const where = new Map(subtreeMembers(target).map((m) => [m.pid, m.sub]));
  const moved: number[] = [];
  for (const tree of manifest.trees) {
    for (const p of tree.processes) {
      const wanted = p.cgroup ?? '';
      const pid = hostPid(p.pid);
      if (where.get(pid) === wanted) continue;
      try {
        moveToSubCgroup(target, wanted, pid);
        moved.push(pid);
      } catch {
        // gone, or the move was refused: the check below names it
      }
    }
  }
  if (moved.length === 0) return moved;
  const now = new Map(subtreeMembers(target).map((m) => [m.pid, m.sub]));
  const astray = manifest.trees.flatMap((t) => t.processes).filter((p) => now.get(hostPid(p.pid)) !== (p.cgroup ?? ''));
  if (astray.length > 0) {
    throw new AgentError(
      'ECRIU',
      `restore of ${manifest.id}: processes ${astray.map((p) => `${hostPid(p.pid)} (${p.cgroup || 'the cgroup itself'})`).join(', ')} are not in their own sub-cgroup of ${describeCgroup(target)}`,
    );
  }
  return moved;
}
