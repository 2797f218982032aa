// Changing many cgroups' freezer state in one call, all or nothing (docs/daemon-and-cli.md, "Many
// cgroups at once"). Every cgroup's lock is taken and its prior state recorded before any freezer
// file is written, so a cgroup that is CHECKPOINTING (EBUSY), busy or gone refuses the whole batch
// with nothing changed. Then the changes are issued together, as the C baseline of bench/ does:
// each driver's freeze() or thaw() writes its file before it first waits, so starting them all
// before awaiting any writes every file first and then waits for all. One that fails there (a
// timeout, a cgroup removed meanwhile, the agent's own cgroup) has the others put back as they
// were: a freeze thaws again the ones it froze, a thaw re-freezes the ones it thawed.

import { describeCgroup, type CgroupRef, type Freezer, type FreezerState } from '../cgroup/index.js';
import { AgentError, isAgentError, type ErrorCode } from '../errors/index.js';
import type { CgroupLease, CgroupStatus, LockOperation, UpdatableFields } from './types.js';

/** What a batch did to one of its cgroups. */
export type BatchOutcome =
  /** Changed as asked (or already in that state). */
  | 'done'
  /** This one's failure ended the batch. */
  | 'failed'
  /** Changed, then put back as it was when another failed. */
  | 'undone'
  /** Left as it was: nothing had been written to it, or it was already in the state asked for. */
  | 'unchanged'
  /** Changed, and putting it back failed: its state is in `status` (or unknown). */
  | 'undo-failed';

export interface BatchResult {
  readonly cgroup: string;
  readonly hierarchy: CgroupRef['hierarchy'];
  readonly outcome: BatchOutcome;
  readonly status?: CgroupStatus;
  readonly error?: { readonly code: ErrorCode; readonly message: string };
}

/** One kind of change: how to make it, and how to take it back from a cgroup's prior state. */
export interface BatchChange {
  readonly operation: Extract<LockOperation, 'freeze' | 'thaw'>;
  readonly phase: string;
  /** The state that needs no change. */
  readonly target: FreezerState;
  apply(freezer: Freezer): Promise<void>;
  /** Puts back a cgroup that was in `prior` before apply(); false when there is nothing to put back. */
  undo(freezer: Freezer, prior: FreezerState): Promise<boolean>;
}

function errorOf(err: unknown): { code: ErrorCode; message: string } {
  return isAgentError(err) ? { code: err.code, message: err.message } : { code: 'EIO', message: String((err as Error)?.message ?? err) };
}

/** EINVAL when two entries name the same cgroup (its lock could not be taken twice). */
export function refuseDuplicates(refs: readonly CgroupRef[]): void {
  const seen = new Map<string, number>();
  refs.forEach((ref, i) => {
    const key = describeCgroup(ref);
    const first = seen.get(key);
    if (first !== undefined) {
      throw new AgentError('EINVAL', `cgroup ${key} is named twice (entries ${first + 1} and ${i + 1}); name each cgroup once`, {
        details: { cgroup: ref.path, hierarchy: ref.hierarchy },
      });
    }
    seen.set(key, i);
  });
}

/** The error that ends a batch: the failing cgroup's own code and message, and every cgroup's outcome. */
function batchError(change: BatchChange, count: number, failed: number, cause: unknown, results: BatchResult[]): AgentError {
  const { code, message } = errorOf(cause);
  const failedRef = results[failed];
  const putBack = results.filter((r) => r.outcome === 'undone').length;
  const stuck = results.filter((r) => r.outcome === 'undo-failed');
  const after =
    stuck.length > 0
      ? `; putting back ${stuck.map((r) => `${r.hierarchy}:${r.cgroup}`).join(', ')} failed too (see details)`
      : putBack > 0
        ? `; ${putBack === 1 ? 'the other one' : `the ${putBack} others`} it had ${change.operation === 'freeze' ? 'frozen' : 'thawed'} ${putBack === 1 ? 'was' : 'were'} ${change.operation === 'freeze' ? 'thawed' : 'frozen'} again`
        : '; nothing was changed';
  return new AgentError(
    code,
    `${change.operation} of ${count} cgroups failed at ${failedRef.hierarchy}:${failedRef.cgroup}: ${message}${after}`,
    {
      cause,
      details: { failed: failed, results },
    },
  );
}

/** A refusal of one cgroup of the batch by the subtree guard: its index and its EBUSY. */
export type BatchRefusal = { readonly index: number; readonly error: unknown } | undefined;

/**
 * Applies `change` to every cgroup or to none. `lease` takes one cgroup's lock (EBUSY when held),
 * writing into its first record what `first` reads under the lock; `guard` runs once every lock is
 * taken and every record written, and names the first cgroup the subtree rule refuses
 * (./subtree-guard.ts, guardAll); `statusOf` reads a cgroup's status through its lease before the
 * lease is released. Resolves with every cgroup's status in the order given; on failure throws the
 * failing cgroup's error with `details: { failed, results }` (BatchResult per cgroup), every lock
 * released.
 */
export async function changeAll(
  refs: readonly CgroupRef[],
  change: BatchChange,
  lease: (ref: CgroupRef, first: (freezer: Freezer) => Partial<UpdatableFields>) => CgroupLease,
  guard: () => BatchRefusal,
  statusOf: (ref: CgroupRef, lease: CgroupLease) => CgroupStatus,
): Promise<CgroupStatus[]> {
  refuseDuplicates(refs);
  const leases: CgroupLease[] = [];
  const priors: FreezerState[] = [];
  const untouched = (except: number, cause: unknown) =>
    refs.map((ref, i): BatchResult =>
      i === except
        ? { cgroup: ref.path, hierarchy: ref.hierarchy, outcome: 'failed', error: errorOf(cause) }
        : { cgroup: ref.path, hierarchy: ref.hierarchy, outcome: 'unchanged' },
    );
  try {
    // Every lock and every prior state first, then the subtree guard over them all: a refusal
    // here leaves everything as it was.
    for (let i = 0; i < refs.length; i++) {
      try {
        let prior: FreezerState | undefined;
        const held = lease(refs[i], (freezer) => {
          prior = freezer.state();
          return { phase: change.phase, priorState: prior };
        });
        leases.push(held);
        priors.push(prior!);
      } catch (err) {
        throw batchError(change, refs.length, i, err, untouched(i, err));
      }
    }
    const refused = guard();
    if (refused) throw batchError(change, refs.length, refused.index, refused.error, untouched(refused.index, refused.error));
    // Issued together: every apply() writes its file before its first await, in the order of
    // ancestorsFirst, so that a thaw (or a freeze's undo, which thaws) of a cgroup and of one below
    // it finds the ancestor already thawed instead of refusing the child as frozen by its parent.
    const order = ancestorsFirst(refs);
    const settled = await inOrder(order, (i) => change.apply(leases[i].freezer));
    const failed = settled.findIndex((s) => s.status === 'rejected');
    if (failed < 0) return leases.map((held, i) => statusOf(refs[i], held));
    const undone = await inOrder(order, (i) =>
      i === failed || priors[i] === change.target ? Promise.resolve(false) : change.undo(leases[i].freezer, priors[i]),
    );
    const results = refs.map((ref, i): BatchResult => {
      const base = { cgroup: ref.path, hierarchy: ref.hierarchy };
      const outcome = settled[i];
      if (outcome.status === 'rejected') {
        return { ...base, outcome: i === failed ? 'failed' : 'unchanged', error: errorOf(outcome.reason) };
      }
      const back = undone[i];
      const status = readStatus(ref, leases[i], statusOf);
      if (back.status === 'rejected') return { ...base, outcome: 'undo-failed', error: errorOf(back.reason), ...status };
      return { ...base, outcome: back.value ? 'undone' : 'unchanged', ...status };
    });
    throw batchError(change, refs.length, failed, (settled[failed] as PromiseRejectedResult).reason, results);
  } finally {
    for (const held of leases) held.release();
  }
}

/** The indices of refs, shallower cgroups first (stable): an ancestor before its descendants. */
function ancestorsFirst(refs: readonly CgroupRef[]): number[] {
  const depth = (ref: CgroupRef) => ref.path.split('/').length;
  return refs.map((_, i) => i).sort((a, b) => depth(refs[a]) - depth(refs[b]) || a - b);
}

/** Starts fn for each index in `order` (each runs up to its first await before the next starts); settles by index. */
async function inOrder<T>(order: readonly number[], fn: (i: number) => Promise<T>): Promise<PromiseSettledResult<T>[]> {
  const started: Promise<T>[] = new Array(order.length);
  for (const i of order) started[i] = fn(i);
  return Promise.allSettled(started);
}

function readStatus(
  ref: CgroupRef,
  held: CgroupLease,
  statusOf: (ref: CgroupRef, lease: CgroupLease) => CgroupStatus,
): { status?: CgroupStatus } {
  try {
    return { status: statusOf(ref, held) };
  } catch {
    return {}; // removed meanwhile: its error already says so
  }
}

export const FREEZE_ALL = (timeoutMs: number | undefined): BatchChange => ({
  operation: 'freeze',
  phase: 'freezing',
  target: 'FROZEN',
  apply: (freezer) => freezer.freeze(timeoutMs === undefined ? {} : { timeoutMs }),
  async undo(freezer, prior) {
    if (prior !== 'THAWED') return false; // FREEZING before (a parent's freeze, a stuck v1 freeze): not ours to thaw
    await freezer.thaw();
    return true;
  },
});

export const THAW_ALL: BatchChange = {
  operation: 'thaw',
  phase: 'thawing',
  target: 'THAWED',
  apply: (freezer) => freezer.thaw(),
  async undo(freezer, prior) {
    if (prior !== 'FROZEN') return false;
    await freezer.freeze();
    return true;
  },
};
