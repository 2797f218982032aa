// The vocabulary of the CHECKPOINTING lock (docs/lock.md). The lock itself is a kernel
// flock on one file per cgroup; these records are what its file says, for diagnosis only.

import type { CgroupRef, Freezer, FreezerState, Hierarchy } from '../cgroup/index.js';

/**
 * The kernel's three states plus agentd's own: CHECKPOINTING while a checkpoint that began from
 * FROZEN holds the lock (the kernel's word then is in kernelState: CRIU thaws the freezer while it
 * holds the tasks, and an early policy thaws before the checksums).
 */
export type AgentState = FreezerState | 'CHECKPOINTING';

export type LockOperation = 'freeze' | 'thaw' | 'checkpoint' | 'restore' | 'kill';

/** Phases the lock module itself writes; callers may record their own with CgroupLease.update(). */
export const PHASE_STARTED = 'started';
export const PHASE_CHECKPOINTING = 'checkpointing';
export const PHASE_CHECKPOINT_ENDED = 'checkpoint-ended';
export const PHASE_FINISHED = 'finished';

/** What a lock file records about its holder. */
export interface LockHolder {
  pid: number;
  requestId: string;
  operation: LockOperation;
  phase: string;
  /** ref.path of the cgroup: `jobs/build-42`. */
  cgroup: string;
  hierarchy: Hierarchy;
  /** ISO time the lock was taken. */
  since: string;
  priorState?: FreezerState;
  imageDir?: string;
  /**
   * ISO time the checkpoint began CHECKPOINTING (beginCheckpoint). Kept in every later record of
   * the same lease: the cgroup reads CHECKPOINTING from then until the lease is released (its image
   * published and its policy applied), whatever the kernel says meanwhile.
   */
  checkpointingSince?: string;
  /** The lock file this record was read from (filled in when read back, never written). */
  lockFile?: string;
}

export interface CgroupStatus {
  /** ref.path */
  cgroup: string;
  hierarchy: Hierarchy;
  /** ref.dir */
  path: string;
  state: AgentState;
  kernelState: FreezerState;
  selfFreezing: boolean;
  parentFreezing: boolean;
  frozenBy?: string;
  /** Whether some process holds the cgroup's lock right now. */
  locked: boolean;
  /** Processes in the cgroup itself. */
  processes: number;
  /** Processes in the cgroup and every cgroup below it: what a checkpoint of it dumps (docs/nested.md). */
  subtreeProcesses: number;
  /** The live holder's record, when locked and the record is readable. */
  holder?: LockHolder;
  /**
   * When `state` is CHECKPOINTING because a checkpoint of a cgroup above holds this one (its
   * subtree is being dumped): that cgroup's path (`holder` stays this cgroup's own).
   */
  checkpointingAncestor?: string;
}

/** A moment, outside CRIU's own window, when a CHECKPOINTING cgroup was seen not FROZEN. */
export interface Breach {
  at: string;
  observed: FreezerState;
}

export interface CheckpointConsistency {
  consistent: boolean;
  breaches: Breach[];
  /** The kernel state when end() returned: FROZEN unless re-freezing a cgroup found thawed failed. */
  finalState: FreezerState;
}

/** An exclusive flock held on the cgroup's lock file. */
export interface CgroupLease {
  readonly ref: CgroupRef;
  /** Opened for the lease, closed by release(). */
  readonly freezer: Freezer;
  /** Rewrites the diagnostic contents of the lock file. */
  update(fields: Partial<Pick<LockHolder, 'phase' | 'priorState' | 'imageDir'>>): void;
  /** EBUSY unless the kernel state is FROZEN; then the state reads CHECKPOINTING and the watch starts. */
  beginCheckpoint(): CheckpointHold;
  /** Idempotent: stops any watch, closes the freezer, marks the record finished and unlocks. */
  release(): void;
}

export interface CheckpointHold {
  readonly lease: CgroupLease;
  /** Runs fn (a CRIU dump) inside CRIU's own window: freezer changes seen while it runs are CRIU's, not breaches. */
  criuWindow<T>(fn: () => Promise<T>): Promise<T>;
  /**
   * Stops the watch, checks the cgroup is FROZEN now (re-freezing it if not, so the state returns to
   * FROZEN whatever happened), and leaves CHECKPOINTING. The lease stays held: the caller applies its
   * policy, then releases. Idempotent.
   */
  end(): Promise<CheckpointConsistency>;
}
