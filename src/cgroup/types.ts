// The vocabulary shared by both freezer drivers. Callers never branch on the cgroup version.

export type Hierarchy = 'v1' | 'v2';

/** The kernel's freezer states (docs/freezer.md). CHECKPOINTING is agentd's own and lives in src/lock. */
export type FreezerState = 'THAWED' | 'FREEZING' | 'FROZEN';

/** A resolved, existing, non-root cgroup directory in one hierarchy. */
export interface CgroupRef {
  readonly hierarchy: Hierarchy;
  /** Path relative to the hierarchy root, without a leading slash: `jobs/build-42`. */
  readonly path: string;
  /** Absolute directory of the cgroup: `/sys/fs/cgroup/unified/jobs/build-42`. */
  readonly dir: string;
  /** Mount point of the hierarchy root. */
  readonly root: string;
}

export interface FreezerStatus {
  readonly state: FreezerState;
  /** The cgroup itself asked to be frozen (v1 freezer.self_freezing, v2 cgroup.freeze = 1). */
  readonly selfFreezing: boolean;
  /** An ancestor asked for the freeze (v1 freezer.parent_freezing; v2 an ancestor's cgroup.freeze). */
  readonly parentFreezing: boolean;
  /** The nearest ancestor that is freezing itself, when parentFreezing. */
  readonly frozenBy?: string;
}

export interface FreezeOptions {
  /** Give up after this long, thaw, and fail with ETIMEDOUT. Default 10 s. */
  readonly timeoutMs?: number;
}

/** A running Freezer.watch(); close() stops it (idempotent). */
export interface StateWatch {
  close(): void;
}

export interface Freezer {
  readonly cgroup: CgroupRef;
  status(): FreezerStatus;
  state(): FreezerState;
  /** Resolves once the kernel reports FROZEN; on failure the cgroup is left THAWED. */
  freeze(options?: FreezeOptions): Promise<void>;
  /** Resolves once the kernel reports THAWED. Refuses (EBUSY) a cgroup frozen by an ancestor. */
  thaw(): Promise<void>;
  /** Pids of the cgroup's processes, from cgroup.procs. */
  processes(): number[];
  /** Pids of the processes of the cgroup and of every cgroup below it (docs/nested.md). */
  subtreeProcesses(): number[];
  /** How many processes are in the cgroup itself and in its subtree: the two counts of a status, read once each. */
  processCounts(): { processes: number; subtreeProcesses: number };
  /**
   * Kills every process of the cgroup and of its descendant cgroups, and waits until their pids are
   * gone; leaves it THAWED. EBUSY on a v1 cgroup frozen by its parent (its tasks cannot die).
   */
  killAll(options?: { timeoutMs?: number }): Promise<void>;
  /**
   * Calls onChange whenever the state may have changed, until the watch is closed: at once on a v2
   * cgroup.events notification and every 20 ms besides, every 5 ms on v1 (no notification exists).
   * A call is a hint to read state(), not a promise that it changed.
   */
  watch(onChange: () => void): StateWatch;
  /** Releases the control files this driver keeps open. */
  close(): void;
}

export const DEFAULT_FREEZE_TIMEOUT_MS = 10_000;
