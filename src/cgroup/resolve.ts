// Turning what an operator typed into one existing cgroup directory, or a typed error that names it.

import { realpathSync, statSync, statfsSync, existsSync } from 'node:fs';
import { join, sep } from 'node:path';
import { AgentError, isAgentError, systemErrno } from '../errors/index.js';
import { discoverMounts, type CgroupMounts } from './mounts.js';
import type { CgroupRef, Hierarchy } from './types.js';

export interface ResolveOptions {
  /** Force one hierarchy; otherwise a relative path prefers v2 (when it has cgroup.freeze), then v1. */
  readonly hierarchy?: Hierarchy;
  readonly mounts?: CgroupMounts;
}

const MAX_PATH_LENGTH = 4096;

/** The file whose presence makes a directory a freezer cgroup of that hierarchy. */
const FREEZER_FILE: Record<Hierarchy, string> = { v1: 'freezer.state', v2: 'cgroup.freeze' };

function mountOf(mounts: CgroupMounts, hierarchy: Hierarchy): string | undefined {
  return hierarchy === 'v1' ? mounts.v1Freezer : mounts.v2;
}

function under(path: string, root: string): boolean {
  return path === root || path.startsWith(root.endsWith(sep) ? root : root + sep);
}

/** Splits and checks a path relative to a hierarchy root; returns its segments. */
function relativeSegments(shown: string, relative: string): string[] {
  const segments = relative.split('/').filter((s) => s !== '' && s !== '.');
  if (segments.includes('..')) {
    throw new AgentError('EINVAL', `invalid cgroup path "${shown}": ".." segments are not allowed`);
  }
  if (segments.length === 0) {
    throw new AgentError('EINVAL', `invalid cgroup path "${shown}": the root cgroup cannot be frozen or checkpointed`);
  }
  return segments;
}

function checkInput(arg: unknown): string {
  if (typeof arg !== 'string' || arg.length === 0) {
    throw new AgentError('EINVAL', 'invalid cgroup path: expected a non-empty string');
  }
  if (arg.includes('\0')) throw new AgentError('EINVAL', 'invalid cgroup path: it contains a NUL byte');
  if (arg.length > MAX_PATH_LENGTH) {
    throw new AgentError('EINVAL', `invalid cgroup path: ${arg.length} characters is longer than ${MAX_PATH_LENGTH}`);
  }
  return arg;
}

/** Where an absolute argument points: which hierarchy's mount it lies under, if any. */
function absoluteTarget(arg: string, mounts: CgroupMounts): { hierarchy: Hierarchy; relative: string } | undefined {
  for (const hierarchy of ['v2', 'v1'] as const) {
    const root = mountOf(mounts, hierarchy);
    if (root && under(arg, root)) return { hierarchy, relative: arg.slice(root.length) };
  }
  return undefined;
}

// The real path of each hierarchy root, resolved once: a mount point does not move while we run (the
// mounts themselves are read once, in discoverMounts, for the same reason). Resolving it again for
// every request cost four lstat calls: 30 µs of the ~260 µs resolveCgroup takes for a request that
// wakes an idle agent on the 2-core reference VM (docs/bench.md). Only successes are kept.
const realRoots = new Map<string, string>();

function realRootOf(root: string): string {
  let real = realRoots.get(root);
  if (real === undefined) {
    real = realpathSync(root);
    realRoots.set(root, real);
  }
  return real;
}

// Cgroups resolved before, by the directory asked for: the answer stands while a stat of that
// directory (following every link, as realpath does) still finds the same inode. A cgroup file
// system numbers its directories with kernfs ids, which on 64-bit kernels are never reused, so the
// same inode is the same cgroup and its real path cannot have changed (a directory has one path);
// a cgroup removed and made again is a new inode and is resolved afresh. One stat instead of
// realpath's readlink per component and the freezer file's access(): a state request made 27
// system calls, of which these were 7 (strace -c, docs/bench.md). Bounded: cleared when full.
const RESOLVED_MAX = 1024;
const resolved = new Map<string, { dev: bigint; ino: bigint; ref: CgroupRef }>();
// Only under a real cgroup mount: elsewhere (a stand-in directory in a test) inodes are reused.
const CGROUP_MAGICS = new Set([0x63677270 /* CGROUP2_SUPER_MAGIC */, 0x27e0eb /* CGROUP_SUPER_MAGIC */]);
const cgroupRoots = new Map<string, boolean>();

function isCgroupMount(root: string): boolean {
  let known = cgroupRoots.get(root);
  if (known === undefined) {
    try {
      known = CGROUP_MAGICS.has(statfsSync(root).type);
    } catch {
      known = false;
    }
    cgroupRoots.set(root, known);
  }
  return known;
}

function statOf(dir: string): { dev: bigint; ino: bigint } | undefined {
  try {
    return statSync(dir, { bigint: true, throwIfNoEntry: false });
  } catch {
    return undefined; // ENOTDIR and the like: the full resolution below says what is wrong
  }
}

function existingCgroup(hierarchy: Hierarchy, root: string, segments: string[], shown: string): CgroupRef {
  const dir = join(root, ...segments);
  const known = resolved.get(dir);
  if (known) {
    const st = statOf(dir);
    if (st && st.dev === known.dev && st.ino === known.ino) return known.ref;
    resolved.delete(dir);
  }
  const ref = resolveExisting(hierarchy, root, segments, shown, dir);
  const st = isCgroupMount(root) ? statOf(ref.dir) : undefined;
  if (st) {
    if (resolved.size >= RESOLVED_MAX) resolved.clear();
    resolved.set(dir, { dev: st.dev, ino: st.ino, ref });
  }
  return ref;
}

function resolveExisting(hierarchy: Hierarchy, root: string, segments: string[], shown: string, dir: string): CgroupRef {
  let real: string;
  let realRoot: string;
  try {
    realRoot = realRootOf(root);
    // realpath(3) in one call, where fs.realpathSync walks the path in JavaScript with an lstat per
    // component: ~a quarter of a state request's time in the agent (node --cpu-prof, docs/bench.md).
    real = realpathSync.native(dir);
  } catch (err) {
    const errno = systemErrno(err);
    if (errno === 'ENOENT' || errno === 'ENOTDIR') {
      throw new AgentError('ENOENT', `cgroup "${shown}" does not exist (no ${dir})`);
    }
    throw new AgentError('EIO', `cannot resolve cgroup "${shown}" at ${dir}: ${errno ?? String(err)}`, { cause: err });
  }
  if (!under(real, realRoot) || real === realRoot) {
    throw new AgentError(
      'EINVAL',
      `invalid cgroup path "${shown}": ${dir} resolves to ${real}, outside the ${hierarchy} hierarchy at ${root}`,
    );
  }
  // The freezer file can only be there if `real` is a directory: no stat of its own is needed.
  if (!existsSync(join(real, FREEZER_FILE[hierarchy]))) {
    throw new AgentError('ENOENT', `"${shown}" is not a ${hierarchy} freezer cgroup (no ${FREEZER_FILE[hierarchy]} in ${real})`);
  }
  const path = real.slice(realRoot.length).replace(/^\/+/, '');
  return { hierarchy, path, dir: join(root, path), root };
}

/**
 * Resolves a cgroup argument: a path relative to a hierarchy root (`jobs/build-42` or `/jobs/build-42`)
 * or an absolute directory under a cgroup mount (`/sys/fs/cgroup/unified/jobs/build-42`).
 */
export function resolveCgroup(arg: unknown, options: ResolveOptions = {}): CgroupRef {
  const input = checkInput(arg);
  const mounts = options.mounts ?? discoverMounts();
  const absolute = input.startsWith('/') ? absoluteTarget(input, mounts) : undefined;
  if (absolute) {
    if (options.hierarchy && options.hierarchy !== absolute.hierarchy) {
      throw new AgentError('EINVAL', `cgroup "${input}" is in the ${absolute.hierarchy} hierarchy, not ${options.hierarchy}`);
    }
    const segments = relativeSegments(input, absolute.relative);
    return existingCgroup(absolute.hierarchy, mountOf(mounts, absolute.hierarchy)!, segments, input);
  }
  const segments = relativeSegments(input, input);
  if (options.hierarchy) {
    const root = mountOf(mounts, options.hierarchy);
    if (!root) throw new AgentError('ENOENT', `no cgroup ${options.hierarchy} freezer hierarchy is mounted on this host`);
    try {
      return existingCgroup(options.hierarchy, root, segments, input);
    } catch (err) {
      throw refineMissing(err, input, segments, mounts, [options.hierarchy]);
    }
  }
  const v2Root = mounts.v2;
  if (v2Root && existsSync(join(v2Root, ...segments, FREEZER_FILE.v2))) {
    return existingCgroup('v2', v2Root, segments, input);
  }
  if (!mounts.v1Freezer && !v2Root) {
    throw new AgentError('ENOENT', 'no cgroup freezer hierarchy is mounted on this host (neither v1 freezer nor cgroup2)');
  }
  try {
    return mounts.v1Freezer ? existingCgroup('v1', mounts.v1Freezer, segments, input) : existingCgroup('v2', v2Root!, segments, input);
  } catch (err) {
    throw refineMissing(err, input, segments, mounts);
  }
}

/**
 * A relative name found in neither hierarchy: the error names every place that was tried (v2 is
 * tried first, so a message naming only the v1 directory sent operators looking in the wrong place),
 * and an argument that is plainly a path elsewhere on the file system (`/etc/passwd`, a cgroup of
 * another v1 controller such as `/sys/fs/cgroup/memory/x`) is called what it is.
 */
function refineMissing(
  err: unknown,
  input: string,
  segments: string[],
  mounts: CgroupMounts,
  hierarchies: readonly Hierarchy[] = ['v2', 'v1'],
): unknown {
  if (!isAgentError(err, 'ENOENT')) return err;
  if (input.startsWith('/') && existsSync(`/${segments[0]}`)) {
    return new AgentError(
      'EINVAL',
      `invalid cgroup path "${input}": it is outside the freezer hierarchies; cgroups live under ${freezerMounts(mounts)} ` +
        '(name one by its directory there, or relative to it)',
      { cause: err },
    );
  }
  let anyExists = false;
  const tried = hierarchies.flatMap((hierarchy) => {
    const root = mountOf(mounts, hierarchy);
    if (!root) return [];
    const dir = join(root, ...segments);
    if (!existsSync(dir)) return [`no ${dir}`];
    anyExists = true;
    return [statSync(dir).isDirectory() ? `${dir} has no ${FREEZER_FILE[hierarchy]}` : `${dir} is not a directory`];
  });
  const what = anyExists ? `is not a freezer cgroup` : 'does not exist';
  return new AgentError('ENOENT', `cgroup "${input}" ${what} (${tried.join('; ')})`, { cause: err });
}

/** `/sys/fs/cgroup/unified (v2) and /sys/fs/cgroup/freezer (v1 freezer)`, for messages. */
function freezerMounts(mounts: CgroupMounts): string {
  const list = [mounts.v2 && `${mounts.v2} (v2)`, mounts.v1Freezer && `${mounts.v1Freezer} (v1 freezer)`].filter(Boolean);
  return list.join(' and ');
}

/** A short human name for messages and lock names: `v2:jobs/build-42`. */
export function describeCgroup(ref: CgroupRef): string {
  return `${ref.hierarchy}:${ref.path}`;
}
