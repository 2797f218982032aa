// CgroupControl: the one guarded way to change a cgroup's freezer state. The daemon, agentctl in
// direct mode and checkpoint orchestration all come through here, so every change takes the
// cgroup's lock first and a CHECKPOINTING cgroup refuses them all with EBUSY.

import { randomUUID } from 'node:crypto';
import { mkdtempSync, readdirSync } from 'node:fs';
import { join } from 'node:path';
import { openFreezer, type CgroupRef, type Freezer, type FreezerStatus } from '../cgroup/index.js';
import { DEFAULT_RUN_DIR } from '../defaults/index.js';
import { fromSystemError, systemErrno } from '../errors/index.js';
import { changeAll, FREEZE_ALL, THAW_ALL, type BatchChange } from './batch.js';
import { busyError, holderOfLocked, isCheckpointing, isLive } from './holder.js';
import { Lease } from './lease.js';
import { checkpointingAncestor, guardAll, guardSubtree } from './subtree-guard.js';
import { ensureLockDir, inspectLock, removeIfUnlocked, type LockFileState } from './lock-file.js';
import { LOCK_SUFFIX, lockFileName } from './lock-name.js';
import { type CgroupLease, type CgroupStatus, type LockHolder, type LockOperation, type UpdatableFields } from './types.js';

// Eight hex digits, as before, from randomUUID's pool of entropy fetched in advance: randomBytes(4)
// asked the kernel each time, a tenth of a millisecond of a freeze in direct mode after an idle
// pause (node --cpu-prof, docs/bench.md).
function newRequestId(): string {
  return randomUUID().slice(0, 8);
}

export class CgroupControl {
  readonly runDir: string;
  readonly locksDir: string;

  constructor(options: { runDir?: string } = {}) {
    this.runDir = options.runDir ?? DEFAULT_RUN_DIR;
    this.locksDir = join(this.runDir, 'locks');
  }

  lockPath(ref: Pick<CgroupRef, 'hierarchy' | 'path'>): string {
    return join(this.locksDir, lockFileName(ref));
  }

  /** The kernel's state, and CHECKPOINTING iff a live checkpoint holds the lock past its freeze (isCheckpointing). */
  status(ref: CgroupRef): CgroupStatus {
    const freezer = openFreezer(ref);
    let kernel;
    let counts;
    try {
      kernel = freezer.status();
      counts = countsOf(freezer);
    } finally {
      freezer.close();
    }
    const lock = inspectLock(this.lockPath(ref));
    const status = statusOf(ref, kernel, lock.locked ? holderOfLocked(lock.record) : undefined, lock.locked, counts);
    if (status.state === 'CHECKPOINTING') return status;
    // A checkpoint of a cgroup above covers this one: every freezer change here gets EBUSY meanwhile.
    const above = checkpointingAncestor(this.locksDir, ref);
    return above ? { ...status, state: 'CHECKPOINTING', checkpointingAncestor: above.path } : status;
  }

  async freeze(ref: CgroupRef, opts: { timeoutMs?: number; requestId?: string } = {}): Promise<CgroupStatus> {
    return this.underLease(ref, 'freeze', 'freezing', opts.requestId, (freezer) =>
      freezer.freeze(opts.timeoutMs === undefined ? {} : { timeoutMs: opts.timeoutMs }),
    );
  }

  async thaw(ref: CgroupRef, opts: { requestId?: string } = {}): Promise<CgroupStatus> {
    // The driver refuses (EBUSY) a cgroup frozen by its parent.
    return this.underLease(ref, 'thaw', 'thawing', opts.requestId, (freezer) => freezer.thaw());
  }

  /**
   * Freezes every cgroup or none (./batch.ts): all their locks first, then every freezer file
   * written before any wait. On failure the ones it froze are thawed again and the error (the
   * failing cgroup's code) carries `details.results`, one BatchResult per cgroup.
   */
  async freezeAll(refs: readonly CgroupRef[], opts: { timeoutMs?: number; requestId?: string } = {}): Promise<CgroupStatus[]> {
    return this.changeMany(refs, FREEZE_ALL(opts.timeoutMs), opts.requestId);
  }

  /** Thaws every cgroup or none, as freezeAll freezes them: on failure the ones it thawed are frozen again. */
  async thawAll(refs: readonly CgroupRef[], opts: { requestId?: string } = {}): Promise<CgroupStatus[]> {
    return this.changeMany(refs, THAW_ALL, opts.requestId);
  }

  /**
   * freezeAll and thawAll: the lock directory checked once, every lock taken with its first record,
   * then one subtree-guard pass for them all (guardAll) before anything is changed.
   */
  private changeMany(refs: readonly CgroupRef[], change: BatchChange, requestId = newRequestId()): Promise<CgroupStatus[]> {
    ensureLockDir(this.runDir, this.locksDir);
    const info = { requestId, operation: change.operation };
    const own = new Set(refs.map((ref) => this.lockPath(ref)));
    return changeAll(
      refs,
      change,
      (ref, first) => this.batchLease(ref, info, first),
      () => guardAll(this.locksDir, refs, change.operation, own),
      releasedStatus,
    );
  }

  /** Kills every process of the cgroup and its subtree under the lock (EBUSY while CHECKPOINTING). */
  async kill(ref: CgroupRef, opts: { timeoutMs?: number; requestId?: string } = {}): Promise<CgroupStatus> {
    return this.underLease(ref, 'kill', 'killing', opts.requestId, (freezer) =>
      freezer.killAll(opts.timeoutMs === undefined ? {} : { timeoutMs: opts.timeoutMs }),
    );
  }

  /**
   * A new private directory under the run directory, for an operation's scratch files (CRIU's logs
   * of a compatibility check or a restore). The run directory is made with the lock directory's
   * checks if it is not there yet: an agent that has only imported an image has taken no lock.
   */
  scratchDir(prefix: string): string {
    ensureLockDir(this.runDir, this.locksDir);
    return mkdtempSync(join(this.runDir, prefix));
  }

  /**
   * One cgroup's lease in a batch, its record written and no guard yet: changeMany guards them all
   * at once after the last. A seam for test/lock/subtree.test.ts, which takes a checkpoint between
   * two of a batch's leases.
   */
  protected batchLease(
    ref: CgroupRef,
    info: { requestId: string; operation: LockOperation },
    first: (freezer: Freezer) => Partial<UpdatableFields>,
  ): CgroupLease {
    return Lease.acquire(ref, this.lockPath(ref), info, first);
  }

  /**
   * Takes the cgroup's lock without waiting; EBUSY naming the holder if someone has it, or naming the
   * cgroup above or below it whose checkpoint (or, for a checkpoint, whose holder) is in the way.
   */
  lease(ref: CgroupRef, info: { requestId: string; operation: LockOperation }): CgroupLease {
    ensureLockDir(this.runDir, this.locksDir);
    return this.leaseInCheckedDir(ref, info);
  }

  /** lease() once ensureLockDir has run, with what `first` reads under the lock in its first record (Lease.acquire). */
  private leaseInCheckedDir(
    ref: CgroupRef,
    info: { requestId: string; operation: LockOperation },
    first?: (freezer: Freezer) => Partial<UpdatableFields>,
  ): CgroupLease {
    const lease = Lease.acquire(ref, this.lockPath(ref), info, first);
    try {
      // The cgroups above and below it: a checkpoint covers the whole subtree (./subtree-guard.ts).
      guardSubtree(this.locksDir, ref, info.operation);
    } catch (err) {
      lease.release();
      throw err;
    }
    return lease;
  }

  /**
   * Records left by a holder that died mid-operation: lock files nobody holds whose phase is not
   * finished. What to do about each cgroup (thaw it, keep it frozen) is recovery's decision.
   */
  staleLocks(): LockHolder[] {
    return this.inspectAll()
      .filter(({ lock }) => !lock.locked && isLive(lock.record))
      .map(({ lock }) => lock.record!);
  }

  /**
   * Records of locks held right now, by a process that still exists: operations in progress, maybe
   * another agent's on the same run directory. Recovery must leave what they work on alone.
   */
  heldLocks(): LockHolder[] {
    return this.inspectAll()
      .map(({ lock }) => (lock.locked ? holderOfLocked(lock.record) : undefined))
      .filter((record): record is LockHolder => record !== undefined);
  }

  /**
   * Removes the lock file of a stale record (staleLocks) once its cgroup is gone and there is
   * nothing left to recover: unless someone holds it, or wrote another record, meanwhile.
   */
  forgetStale(record: LockHolder): void {
    const same = (r: LockHolder | undefined) => r?.pid === record.pid && r.requestId === record.requestId;
    removeIfUnlocked(this.lockPath({ hierarchy: record.hierarchy, path: record.cgroup }), (r) => !same(r));
  }

  /**
   * Removes every lock file nobody holds whose record is not live (finished, or none): what an
   * agentd that did not remove its lock files on release left, one per cgroup it ever named, and
   * files flock(1) made. Stale records (a dead holder's) are recovery's and are kept. Returns the
   * files removed.
   */
  sweep(): string[] {
    const removed: string[] = [];
    for (const { path, lock } of this.inspectAll()) {
      if (lock.locked || isLive(lock.record)) continue;
      if (removeIfUnlocked(path, (record) => isLive(record)).outcome === 'removed') removed.push(path);
    }
    return removed;
  }

  /** One freezer change under the cgroup's lock: the phase and prior state recorded, then change(), then the status. */
  private async underLease(
    ref: CgroupRef,
    operation: LockOperation,
    phase: string,
    requestId: string | undefined,
    change: (freezer: Freezer) => Promise<void>,
  ): Promise<CgroupStatus> {
    ensureLockDir(this.runDir, this.locksDir);
    const lease = this.leaseInCheckedDir(ref, { requestId: requestId ?? newRequestId(), operation }, (freezer) => ({
      phase,
      priorState: freezer.state(),
    }));
    try {
      await change(lease.freezer);
      return releasedStatus(ref, lease);
    } finally {
      lease.release();
    }
  }

  private inspectAll(): { path: string; lock: LockFileState }[] {
    let names: string[];
    try {
      names = readdirSync(this.locksDir);
    } catch (err) {
      if (systemErrno(err) === 'ENOENT') return [];
      throw fromSystemError(err, `failed to list lock directory ${this.locksDir}`);
    }
    const states: { path: string; lock: LockFileState }[] = [];
    for (const name of names.filter((n) => n.endsWith(LOCK_SUFFIX)).sort()) {
      const path = join(this.locksDir, name);
      try {
        const lock = inspectLock(path);
        if (lock.exists) states.push({ path, lock });
      } catch {
        continue; // not a plain lock file of ours (a planted symlink, say): nothing a holder left
      }
    }
    return states;
  }

  /** Removes the cgroup's lock file if nobody holds it; EBUSY naming the holder if someone does. */
  forget(ref: CgroupRef): void {
    const lockFile = this.lockPath(ref);
    const result = removeIfUnlocked(lockFile);
    if (result.outcome === 'held') throw busyError(ref, holderOfLocked(result.record), lockFile);
  }
}

function countsOf(freezer: Freezer): { processes: number; subtreeProcesses: number } {
  return freezer.processCounts();
}

function statusOf(
  ref: CgroupRef,
  kernel: FreezerStatus,
  holder: LockHolder | undefined,
  locked: boolean,
  counts: { processes: number; subtreeProcesses: number },
): CgroupStatus {
  const status: CgroupStatus = {
    cgroup: ref.path,
    hierarchy: ref.hierarchy,
    path: ref.dir,
    state: isCheckpointing(holder) ? 'CHECKPOINTING' : kernel.state,
    kernelState: kernel.state,
    selfFreezing: kernel.selfFreezing,
    parentFreezing: kernel.parentFreezing,
    locked,
    ...counts,
  };
  if (kernel.frozenBy !== undefined) status.frozenBy = kernel.frozenBy;
  if (holder) status.holder = holder;
  return status;
}

// The reply to a freeze or thaw, read through the lease's own freezer just before the lease is
// released (as its caller's finally does at once): reopening the cgroup and probing the lock again
// afterwards cost a freeze request about half a millisecond for the same answer.
function releasedStatus(ref: CgroupRef, lease: CgroupLease): CgroupStatus {
  return statusOf(ref, lease.freezer.status(), undefined, false, countsOf(lease.freezer));
}
