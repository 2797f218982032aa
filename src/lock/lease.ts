// A lease: the cgroup's lock held by this process for one operation, and the CHECKPOINTING hold
// taken on top of it.

import { describeCgroup, openFreezer, type CgroupRef, type Freezer, type FreezerState } from '../cgroup/index.js';
import { AgentError } from '../errors/index.js';
import { tryLockExclusive, unlock } from './flock.js';
import { busyError, holderOfLocked } from './holder.js';
import { closeLockFd, isAtPath, openForLocking, readRecord, removeHeld, writeRecord, type OpenedLock } from './lock-file.js';
import {
  PHASE_CHECKPOINT_ENDED,
  PHASE_CHECKPOINTING,
  PHASE_FINISHED,
  PHASE_STARTED,
  type CgroupLease,
  type CheckpointConsistency,
  type CheckpointHold,
  type LockHolder,
  type LockOperation,
  type UpdatableFields,
} from './types.js';
import { FreezerWatch } from './watch.js';

// When the lock is held but its record names no live holder, the holder is either a status probe
// (it holds the lock for microseconds), a new holder between its flock and its first write, or a
// tool such as flock(1). Looking again every millisecond for ~25 ms lets the first two resolve, so a
// refusal names the real holder; lease() is synchronous, hence the short blocking sleeps.
const UNRECORDED_RETRIES = 25;
const UNRECORDED_RETRY_MS = 1;
// A lock file unlinked by forget() between our open and our flock: start again with the new file.
const REOPEN_RETRIES = 20;

function sleepSync(ms: number): void {
  Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, ms);
}

/** Takes the lock without waiting: the locked file, or EBUSY naming the holder. */
function lockOrBusy(ref: CgroupRef, lockFile: string): OpenedLock {
  for (let reopen = 0, unrecorded = 0; ;) {
    const opened = openForLocking(lockFile);
    const fd = opened.fd;
    let keep = false;
    try {
      if (tryLockExclusive(fd, lockFile)) {
        if (isAtPath(opened, lockFile)) {
          keep = true;
          return opened;
        }
        if (++reopen > REOPEN_RETRIES) throw new AgentError('EIO', `lock file ${lockFile} keeps being replaced while we lock it`);
        continue;
      }
      const record = readRecord(fd, lockFile);
      const live = holderOfLocked(record);
      if (live || ++unrecorded > UNRECORDED_RETRIES) throw busyError(ref, live, lockFile);
    } finally {
      if (!keep) closeLockFd(fd);
    }
    sleepSync(UNRECORDED_RETRY_MS);
  }
}

export class Lease implements CgroupLease {
  private fd: number | undefined;
  private hold: Hold | undefined;
  private current: LockHolder;
  /** The record's length as we last wrote it: writeRecord's ftruncate is needed only after a longer one. */
  private length: number;

  private constructor(
    readonly ref: CgroupRef,
    readonly freezer: Freezer,
    readonly lockFile: string,
    private readonly opened: OpenedLock,
    holder: LockHolder,
    length: number,
  ) {
    this.fd = opened.fd;
    this.current = holder;
    this.length = length;
  }

  /**
   * Opens the freezer, takes the lock (EBUSY naming the holder if taken) and writes the record.
   * `first`, when given, is read under the lock before that first write and goes into it (a freeze's
   * phase and the prior state it read), which saves rewriting the record at once: the lock is
   * without a record for those few reads, a window the holder's rivals already wait out (~25 ms).
   */
  static acquire(
    ref: CgroupRef,
    lockFile: string,
    info: { requestId: string; operation: LockOperation },
    first?: (freezer: Freezer) => Partial<UpdatableFields>,
  ): Lease {
    const freezer = openFreezer(ref);
    let opened: OpenedLock | undefined;
    try {
      opened = lockOrBusy(ref, lockFile);
      const started: LockHolder = {
        pid: process.pid,
        requestId: info.requestId,
        operation: info.operation,
        phase: PHASE_STARTED,
        cgroup: ref.path,
        hierarchy: ref.hierarchy,
        since: new Date().toISOString(),
      };
      const holder = first ? withFields(started, first(freezer)) : started;
      const length = writeRecord(opened.fd, lockFile, holder, opened.size);
      return new Lease(ref, freezer, lockFile, opened, holder, length);
    } catch (err) {
      if (opened !== undefined) closeLockFd(opened.fd);
      freezer.close();
      throw err;
    }
  }

  /** The record as this lease last wrote it. */
  get record(): LockHolder {
    return this.current;
  }

  get released(): boolean {
    return this.fd === undefined;
  }

  update(fields: Partial<UpdatableFields>): void {
    const fd = this.openFd();
    const next = withFields(this.current, fields);
    this.length = writeRecord(fd, this.lockFile, next, this.length);
    this.current = next;
  }

  beginCheckpoint(): CheckpointHold {
    this.openFd();
    if (this.hold && !this.hold.ended) throw busyError(this.ref, this.current, this.lockFile);
    const watch = new FreezerWatch(this.freezer);
    watch.start();
    let state: FreezerState;
    try {
      state = this.freezer.state();
    } catch (err) {
      watch.stop();
      throw err;
    }
    if (state !== 'FROZEN') {
      watch.stop();
      throw new AgentError(
        'EBUSY',
        `cgroup ${describeCgroup(this.ref)} is ${state}, not FROZEN: a checkpoint can only start from FROZEN (freeze it first)`,
        {
          details: { cgroup: this.ref.path, hierarchy: this.ref.hierarchy, kernelState: state },
        },
      );
    }
    try {
      this.current = { ...this.current, checkpointingSince: new Date().toISOString() };
      this.update({ phase: PHASE_CHECKPOINTING });
    } catch (err) {
      watch.stop();
      throw err;
    }
    this.hold = new Hold(this, watch);
    return this.hold;
  }

  release(): void {
    const fd = this.fd;
    if (fd === undefined) return;
    this.fd = undefined;
    try {
      this.hold?.abandon();
      try {
        // Marked finished before unlocking, so a record read after the unlock (through a file
        // opened before it was removed) never looks live.
        this.length = writeRecord(fd, this.lockFile, { ...this.current, phase: PHASE_FINISHED }, this.length);
        this.current = { ...this.current, phase: PHASE_FINISHED };
        // Nothing holds it once we unlock: removed now, or a file would pile up for every cgroup
        // ever named. A holder that dies instead leaves its file, and recovery finds its record.
        removeHeld(fd, this.lockFile, this.opened);
      } finally {
        try {
          unlock(fd, this.lockFile);
        } finally {
          closeLockFd(fd); // closing alone would drop the lock too; unlocking first says what we mean
        }
      }
    } finally {
      this.freezer.close();
    }
  }

  private openFd(): number {
    if (this.fd === undefined) {
      throw new AgentError(
        'EINVAL',
        `the lease on cgroup ${describeCgroup(this.ref)} (request ${this.current.requestId}) was already released`,
      );
    }
    return this.fd;
  }
}

function withFields(holder: LockHolder, fields: Partial<UpdatableFields>): LockHolder {
  const next = { ...holder };
  if (fields.phase !== undefined) next.phase = fields.phase;
  if (fields.priorState !== undefined) next.priorState = fields.priorState;
  if (fields.imageDir !== undefined) next.imageDir = fields.imageDir;
  if (fields.restoredProcesses !== undefined) next.restoredProcesses = fields.restoredProcesses;
  if (fields.restoringTree !== undefined) next.restoringTree = fields.restoringTree;
  if (fields.createdCgroups !== undefined) next.createdCgroups = fields.createdCgroups;
  if (fields.workDir !== undefined) next.workDir = fields.workDir;
  return next;
}

// After CRIU puts a v1 cgroup back to FROZEN, it reads FREEZING until a read finds every task
// frozen (up to 0.33 s seen with 1000 busy tasks, docs/freezer.md). Give it that long, and a margin,
// before the watch judges the state again.
const CRIU_SETTLE_MS = 1000;

class Hold implements CheckpointHold {
  ended = false;
  private result: CheckpointConsistency | undefined;

  constructor(
    readonly lease: Lease,
    private readonly watch: FreezerWatch,
  ) {}

  async criuWindow<T>(fn: () => Promise<T>): Promise<T> {
    if (this.ended) throw new AgentError('EINVAL', `the checkpoint of cgroup ${describeCgroup(this.lease.ref)} has already ended`);
    this.watch.pause();
    try {
      return await fn();
    } finally {
      await this.settle();
      this.watch.resume();
      this.watch.observe();
    }
  }

  async end(): Promise<CheckpointConsistency> {
    if (this.result) return this.result;
    if (this.lease.released) {
      throw new AgentError('EINVAL', `the lease on cgroup ${describeCgroup(this.lease.ref)} was released before its checkpoint ended`);
    }
    this.watch.stop();
    const breaches = [...this.watch.breaches];
    const freezer = this.lease.freezer;
    try {
      let state = freezer.state();
      if (state !== 'FROZEN') {
        if (freezer.subtreeProcesses().length > 0) breaches.push({ at: new Date().toISOString(), observed: state });
        // CHECKPOINTING always ends in FROZEN (docs/freezer.md, rule 4): put back what was lost, and let
        // the inconsistency speak for the image.
        try {
          await freezer.freeze();
        } catch {
          // A failed freeze leaves the cgroup THAWED; finalState says so.
        }
        state = freezer.state();
      }
      this.result = { consistent: breaches.length === 0, breaches, finalState: state };
      return this.result;
    } finally {
      this.ended = true;
      if (!this.lease.released) this.lease.update({ phase: PHASE_CHECKPOINT_ENDED });
    }
  }

  /** Stops the watch without a verdict: the lease is being released mid-checkpoint. */
  abandon(): void {
    this.watch.stop();
    this.ended = true;
  }

  private async settle(): Promise<void> {
    const deadline = Date.now() + CRIU_SETTLE_MS;
    try {
      while (this.lease.freezer.state() === 'FREEZING' && Date.now() < deadline) {
        await new Promise((resolve) => setTimeout(resolve, 1));
      }
    } catch {
      // The watch reports read errors itself.
    }
  }
}
