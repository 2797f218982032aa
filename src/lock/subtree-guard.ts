// The CHECKPOINTING lock covers the subtree (docs/lock.md, "Subtrees"). A checkpoint of P dumps
// every process below P, so while it runs nothing may freeze, thaw, kill, restore into or checkpoint
// a cgroup below P, and a checkpoint of P may not start while anything holds a cgroup below it or
// above it. Each cgroup keeps its own lock file; the guard looks at the related ones:
//
//   - every operation on X: refused if a live CHECKPOINT holds an ancestor's or a descendant's lock;
//   - a checkpoint of X besides: refused if anyone holds an ancestor's or a descendant's lock.
//
// Why this excludes both orders without any waiting (no deadlock can exist: no flock here blocks):
// each side first takes its own lock and writes its record (Lease.acquire), then looks at the other's
// file. Whichever looks second finds the other locked with its record written, and the checkpoint's
// rule refuses anything locked while the other operations' rule refuses a checkpoint record, so at
// least one of two conflicting requests gets EBUSY. A lock caught without a record yet (a holder
// between its flock and its write, or a status probe) is looked at again for up to ~25 ms, as a
// lease does (./lease.ts).

import { readdirSync } from 'node:fs';
import { join } from 'node:path';
import { describeCgroup, type CgroupRef } from '../cgroup/index.js';
import { AgentError } from '../errors/index.js';
import { holderOfLocked, isCheckpointing, timeOfDay } from './holder.js';
import { inspectLock } from './lock-file.js';
import { descendantNamePrefix, isHashedName, lockFileName, LOCK_SUFFIX } from './lock-name.js';
import { PHASE_CHECKPOINTING, type LockHolder, type LockOperation } from './types.js';

const UNRECORDED_RETRIES = 25;
const UNRECORDED_RETRY_MS = 1;

function sleepSync(ms: number): void {
  Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, ms);
}

interface Related {
  readonly path: string;
  readonly lockFile: string;
  readonly relation: 'ancestor' | 'descendant';
}

/** The lock file names in the directory, listed once for a whole guard pass. */
interface Listing {
  readonly locksDir: string;
  readonly names: ReadonlySet<string>;
  /** The readable names (`v2-jobs%2Fa.lock`) and the hashed ones, sorted out once for every cgroup of a batch. */
  readonly readable: readonly string[];
  readonly hashedNames: readonly string[];
  /** Hashed names' records, read at most once per pass. */
  readonly hashed: Map<string, LockHolder | undefined>;
}

function listLocks(locksDir: string): Listing {
  let names: string[];
  try {
    names = readdirSync(locksDir).filter((name) => name.endsWith(LOCK_SUFFIX));
  } catch {
    names = [];
  }
  const hashedNames = names.filter(isHashedName);
  const readable = names.filter((name) => !isHashedName(name));
  return { locksDir, names: new Set(names), readable, hashedNames, hashed: new Map() };
}

// The ancestors' files are looked up in the listing rather than opened by name: one that is not
// listed did not exist when the pass began, after our own records were written, so whoever takes
// it later looks at ours afterwards (the order argument above) and it is theirs to refuse.
function ancestorsOf(ref: CgroupRef, listing: Listing): Related[] {
  const parts = ref.path.split('/');
  const found: Related[] = [];
  for (let i = 1; i < parts.length; i++) {
    const path = parts.slice(0, i).join('/');
    const name = lockFileName({ hierarchy: ref.hierarchy, path });
    if (listing.names.has(name)) found.push({ path, lockFile: join(listing.locksDir, name), relation: 'ancestor' });
  }
  return found;
}

function descendantsOf(ref: CgroupRef, listing: Listing): Related[] {
  const prefix = descendantNamePrefix(ref);
  const found: Related[] = [];
  for (const name of listing.readable) {
    if (name.startsWith(prefix)) {
      const path = decodeURIComponent(name.slice(ref.hierarchy.length + 1, -LOCK_SUFFIX.length));
      found.push({ path, lockFile: join(listing.locksDir, name), relation: 'descendant' });
    }
  }
  for (const name of listing.hashedNames) {
    if (name.startsWith(ref.hierarchy)) {
      // Its record names the cgroup (written right after the flock; an unrecorded one is nobody's yet).
      const lockFile = join(listing.locksDir, name);
      if (!listing.hashed.has(name)) listing.hashed.set(name, inspectQuietly(lockFile)?.record);
      const record = listing.hashed.get(name);
      if (record && record.hierarchy === ref.hierarchy && record.cgroup.startsWith(ref.path + '/')) {
        found.push({ path: record.cgroup, lockFile, relation: 'descendant' });
      }
    }
  }
  return found.sort((a, b) => a.path.localeCompare(b.path));
}

function inspectQuietly(lockFile: string) {
  try {
    return inspectLock(lockFile);
  } catch {
    return undefined; // not a plain lock file of ours: nothing of agentd's holds it
  }
}

/** Who holds the file: a live record, 'unrecorded' (locked, no record after the retries), or undefined when free. */
function holderOf(lockFile: string): LockHolder | 'unrecorded' | undefined {
  for (let attempt = 0; ; attempt++) {
    const state = inspectQuietly(lockFile);
    if (!state?.locked) return undefined;
    const live = holderOfLocked(state.record);
    if (live) return live;
    if (attempt >= UNRECORDED_RETRIES) return 'unrecorded';
    sleepSync(UNRECORDED_RETRY_MS);
  }
}

function refusal(ref: CgroupRef, other: Related, holder: LockHolder | 'unrecorded'): AgentError {
  const otherName = `${ref.hierarchy}:${other.path}`;
  const where = other.relation === 'ancestor' ? `is inside ${otherName}` : `has ${otherName} below it`;
  let what: string;
  if (holder === 'unrecorded') what = `whose lock ${other.lockFile} another process holds (it has not recorded who)`;
  else if (holder.phase === PHASE_CHECKPOINTING)
    what = `which is CHECKPOINTING (request ${holder.requestId}, since ${timeOfDay(holder.since)})`;
  else what = `which is busy: a ${holder.operation} (request ${holder.requestId}) is in progress since ${timeOfDay(holder.since)}`;
  return new AgentError('EBUSY', `cgroup ${describeCgroup(ref)} ${where}, ${what}; a checkpoint covers the whole subtree`, {
    details: {
      cgroup: ref.path,
      hierarchy: ref.hierarchy,
      [other.relation]: other.path,
      lockFile: other.lockFile,
      ...(holder === 'unrecorded' ? {} : { holder }),
    },
  });
}

/**
 * Throws EBUSY when an operation on `ref` would cross a checkpoint of a cgroup above or below it,
 * or when a checkpoint of `ref` would cross anything held above or below it. Call with the cgroup's
 * own lock held and its record written.
 */
export function guardSubtree(locksDir: string, ref: CgroupRef, operation: LockOperation): void {
  const refused = guardAll(locksDir, [ref], operation, new Set());
  if (refused) throw refused.error;
}

/**
 * guardSubtree for every cgroup of a batch in one pass: the lock directory is listed once, after
 * every lock of the batch is taken and every record written (the order argument above holds for
 * each of them: each looks after its own record), instead of once per cgroup, which made a batch's
 * guard grow with the square of its size (a readdir of up to n names for each of n cgroups). The
 * batch's own files (`own`) are skipped: they hold our records, which are never a checkpoint's.
 * Returns the first cgroup in `refs` that is refused, with its EBUSY.
 */
export function guardAll(
  locksDir: string,
  refs: readonly CgroupRef[],
  operation: LockOperation,
  own: ReadonlySet<string>,
): { index: number; error: AgentError } | undefined {
  const listing = listLocks(locksDir);
  // A file's holder, asked at most once per pass (many cgroups of a batch share an ancestor).
  const holders = new Map<string, LockHolder | 'unrecorded' | undefined>();
  for (let index = 0; index < refs.length; index++) {
    const ref = refs[index];
    for (const other of [...ancestorsOf(ref, listing), ...descendantsOf(ref, listing)]) {
      if (own.has(other.lockFile)) continue;
      if (!holders.has(other.lockFile)) holders.set(other.lockFile, holderOf(other.lockFile));
      const holder = holders.get(other.lockFile);
      if (holder === undefined) continue;
      if (operation === 'checkpoint') return { index, error: refusal(ref, other, holder) };
      if (holder !== 'unrecorded' && holder.operation === 'checkpoint') return { index, error: refusal(ref, other, holder) };
    }
  }
  return undefined;
}

/**
 * The nearest ancestor of `ref` that is CHECKPOINTING, with its holder's record: the checkpoint
 * covers `ref` too, so `ref` reads CHECKPOINTING as well (docs/nested.md). Looks only at lock files
 * (one open per ancestor level; most do not exist).
 */
export function checkpointingAncestor(locksDir: string, ref: CgroupRef): { path: string; holder: LockHolder } | undefined {
  const parts = ref.path.split('/');
  for (let i = parts.length - 1; i >= 1; i--) {
    const path = parts.slice(0, i).join('/');
    const other = { path, lockFile: join(locksDir, lockFileName({ hierarchy: ref.hierarchy, path })) };
    const state = inspectQuietly(other.lockFile);
    if (!state?.locked) continue;
    const holder = holderOfLocked(state.record);
    if (isCheckpointing(holder)) return { path: other.path, holder: holder! };
  }
  return undefined;
}
