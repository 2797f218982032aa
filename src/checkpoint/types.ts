// The contract of checkpoint orchestration as the daemon and CLI see it. The implementation
// (Checkpointer in ./checkpointer.ts) freezes, takes CHECKPOINTING, dumps every process tree with
// CRIU, verifies, writes the manifest and applies the --after policy (in that order, or the policy
// first when it lets the workload run again: ./dump-flow.ts), then releases.

import type { Hierarchy, FreezerState } from '../cgroup/index.js';
import type { DumpNetworkLock } from '../criu/index.js';

export type AfterPolicy = 'prior' | 'thawed' | 'frozen' | 'killed';
export const AFTER_POLICIES: readonly AfterPolicy[] = ['prior', 'thawed', 'frozen', 'killed'];

export interface CheckpointOptions {
  /** What the cgroup becomes afterwards. Default `prior`: the state it had before the request. */
  readonly after?: AfterPolicy;
  readonly shellJob?: boolean;
  readonly tcpEstablished?: boolean;
  readonly fileLocks?: boolean;
  /**
   * Pre-dumps before the frozen dump (0 to 8, default 0): the memory copied while the workload runs,
   * so that the frozen dump writes only what changed since (src/checkpoint/pre-dump.ts). Refused
   * before anything is frozen where the kernel does not track dirty memory.
   */
  readonly preDumps?: number;
  /** Whole-operation limit; CRIU is killed and the cgroup restored when it is exceeded. */
  readonly timeoutMs?: number;
  /** Image root for this checkpoint; default the agent's images directory. */
  readonly imagesDir?: string;
  readonly requestId?: string;
}

export type Stage =
  | 'preflight'
  /** A pre-dump, the workload running (message: round i/N). */
  | 'pre-dump'
  | 'freeze'
  | 'lock'
  | 'dump'
  | 'verify'
  | 'manifest'
  | 'release'
  | 'policy'
  /** A restore waiting for zombies holding the saved pids to be reaped. */
  | 'pids'
  | 'restore'
  | 'done';

/** Streamed to clients during long operations. */
export interface ProgressEvent {
  readonly stage: Stage;
  readonly message?: string;
  /** Bytes done so far of the stage: image written (dump), hashed (manifest, verify). */
  readonly bytes?: number;
  /** The bytes the stage expects in all: resident memory (dump), image bytes (manifest, verify). */
  readonly total?: number;
  /** 1-based index of the process tree being dumped or restored, and how many there are. */
  readonly tree?: number;
  readonly trees?: number;
}

export interface OperationHooks {
  readonly onProgress?: (event: ProgressEvent) => void;
  /** Aborting cancels the operation cleanly: the cgroup goes back to its prior state. */
  readonly signal?: AbortSignal;
}

export interface ProcessRecord {
  readonly pid: number;
  readonly ppid: number;
  readonly command: string;
  /**
   * The sub-cgroup it was in, relative to the checkpointed cgroup: '' for the cgroup itself, `a/b`
   * for one below it (docs/nested.md). Absent in manifests written before subtrees: the cgroup itself.
   */
  readonly cgroup?: string;
}

export interface TreeRecord {
  /** Position in the saved order, from 0; the dump sub-directory is `tree-<index>`. */
  readonly index: number;
  readonly root: number;
  readonly processes: readonly ProcessRecord[];
  /** Pre-dumps under `tree-<index>/pre-<i>` its final dump builds on (absent: none, a self-contained dump). */
  readonly preDumps?: number;
  /**
   * The --network-lock its dump was given: `skip` for a tree that held no TCP socket, else the
   * agent's lock (src/criu/network-lock.ts); absent: CRIU's default (or a manifest from before).
   */
  readonly networkLock?: NonNullable<DumpNetworkLock>;
}

export interface ImageFile {
  readonly path: string; // relative to the checkpoint directory
  readonly size: number;
  /** sha256 of the bytes, or with chunkBytes the sha256 of the sha256 of each piece (src/checkpoint/digest.ts). */
  readonly sha256: string;
  /** Piece size of a chunked digest; absent for a plain sha256 (files up to 16 MiB, and older manifests). */
  readonly chunkBytes?: number;
}

export interface Timings {
  readonly freezeMs: number;
  /**
   * How long the workload was stopped by this request: from frozen to the thaw (`thawed`, `prior`
   * from THAWED: before the checksums and the manifest) or to the policy applied (the others).
   */
  readonly frozenWindowMs: number;
  readonly dumpMs: number;
  /** Checksums of the image files (absent in manifests written before it was recorded). */
  readonly hashMs?: number;
  /** Image bytes already hashed when CRIU exited (page files followed as they grew, src/checkpoint/follow.ts). */
  readonly hashedDuringDumpBytes?: number;
  /** Manifest written, fsynced, the directory renamed to its final name (absent likewise). */
  readonly publishMs?: number;
  readonly totalMs: number;
}

/** What the dumping host was, beside the kernel release and CRIU version (src/checkpoint/compat.ts). */
export interface HostRecord {
  /** The checkpoint's cpuinfo.img (`criu cpuinfo dump`), relative to its directory. */
  readonly cpuinfo: string;
}

export interface Manifest {
  readonly formatVersion: 1;
  readonly id: string;
  readonly cgroup: string;
  readonly hierarchy: Hierarchy;
  readonly cgroupDir: string;
  readonly createdAt: string;
  readonly kernel: string;
  readonly criuVersion: string;
  /** What CRIU recorded of the dumping host (src/checkpoint/compat.ts); absent in older manifests. */
  readonly host?: HostRecord;
  readonly options: Omit<CheckpointOptions, 'imagesDir' | 'requestId'>;
  readonly priorState: FreezerState;
  readonly trees: readonly TreeRecord[];
  /** Every cgroup below the checkpointed one at dump time, relative, parents first (absent before subtrees). */
  readonly subCgroups?: readonly string[];
  readonly files: readonly ImageFile[];
  readonly criuStats: readonly Record<string, number>[];
  readonly timings: Timings;
  /** Set on a checkpoint that came in as an archive (src/archive): where from, and who signed it. */
  readonly imported?: ImportRecord;
}

export interface ImportRecord {
  /** The checkpoint's id on the agent that exported it. */
  readonly from: string;
  readonly at: string;
  /** `sha256:<hex>` of the signer's key; absent for an unsigned archive. */
  readonly signer?: string;
  /** The trusted-keys file holding the signer's key; absent when root imported it with --trust. */
  readonly trustedBy?: string;
}

export interface CheckpointSummary {
  readonly id: string;
  readonly dir: string;
  readonly cgroup: string;
  readonly hierarchy: Hierarchy;
  readonly createdAt: string;
  readonly trees: number;
  readonly processes: number;
  readonly bytes: number;
  readonly after: AfterPolicy;
  readonly finalState: FreezerState | 'EMPTY';
  readonly timings: Timings;
  /** What the operator should know of a checkpoint that worked: pre-dumps that saved little. */
  readonly warnings?: readonly string[];
}

export interface CheckpointListing {
  readonly id: string;
  readonly dir: string;
  /** good: complete and verified manifest; failed: kept only for diagnosis under a failed name. */
  readonly status: 'good' | 'failed';
  readonly cgroup?: string;
  readonly hierarchy?: Hierarchy;
  /** A good one: when it was frozen. A failed one: when the attempt began (from its failure.json, else its id). */
  readonly createdAt?: string;
  readonly bytes?: number;
  readonly processes?: number;
  /** A failed one: why (from its failure.json; absent for attempts recorded before it was). */
  readonly error?: { readonly code: string; readonly message: string };
}

/** What a failed attempt left in `<id>.failed/failure.json`, as GET /v1/checkpoints/{id} shows it. */
export interface FailureRecord {
  readonly id: string;
  readonly status: 'failed';
  readonly dir: string;
  readonly cgroup?: string;
  readonly hierarchy?: Hierarchy;
  readonly startedAt?: string;
  readonly failedAt?: string;
  /** Bytes CRIU had written when the attempt failed (its logs and partial images). */
  readonly bytes?: number;
  readonly error?: { readonly code: string; readonly message: string };
  /** Processes that did not come out of the attempt, with the kernel's word on each. */
  readonly lost?: readonly (ProcessRecord & { readonly kernel: readonly string[] })[];
}

export interface PruneOptions {
  /** Only failed attempts. */
  readonly failed?: boolean;
  /** Only checkpoints created (or attempted) at least this long ago. */
  readonly olderThanMs?: number;
  /** Say what would be removed; remove nothing. */
  readonly dryRun?: boolean;
}

export interface PruneResult {
  readonly dryRun: boolean;
  /** Removed (or, in a dry run, to be removed), oldest first. */
  readonly removed: readonly CheckpointListing[];
  /** Matched but left: in use by a running operation. */
  readonly kept: readonly { readonly id: string; readonly reason: string }[];
}

/** The state a restore leaves the cgroup in: the checkpoint's prior state (default), or as chosen. */
export type RestorePolicy = 'prior' | 'thawed' | 'frozen';
export const RESTORE_POLICIES: readonly RestorePolicy[] = ['prior', 'thawed', 'frozen'];

export interface RestoreOptions {
  /** Restore into this cgroup (relative path or absolute dir) instead of the original. */
  readonly cgroup?: string;
  /** Default `prior`: the state the cgroup had when it was checkpointed (the manifest's priorState). */
  readonly after?: RestorePolicy;
  readonly hierarchy?: Hierarchy;
  readonly timeoutMs?: number;
  readonly requestId?: string;
  /**
   * Which PID namespace the processes come back in. `host` (the default): the host's, each with its
   * saved pid, so none may be taken. `new`: a new one of their own (docs/pid-namespace.md), where
   * the saved pids are free by construction; they then have other pids on the host.
   */
  readonly pidNamespace?: PidNamespaceMode;
  /** Restore even when CRIU's version or the CPU differ from the dumping host's (src/checkpoint/compat.ts). */
  readonly force?: boolean;
  /**
   * The transient systemd scope the restored processes become (src/systemd/restore-scope.ts): this
   * name, or false for none. Unset: agentd-restore-ID.scope where the agent makes scopes by default
   * (--restore-scope) and the restore does not name a v2 cgroup of its own, else none.
   */
  readonly unit?: string | false;
}

export type PidNamespaceMode = 'host' | 'new';
export const PID_NAMESPACE_MODES: readonly PidNamespaceMode[] = ['host', 'new'];

/** One restored process: its pid on the host and, restored into a new PID namespace, its pid there (the saved one). */
export interface RestoredProcess {
  readonly pid: number;
  readonly nsPid?: number;
}

export interface RestoreSummary {
  readonly id: string;
  readonly cgroup: string;
  readonly hierarchy: Hierarchy;
  /** Host pids of the restored processes, in the saved order. */
  readonly pids: readonly number[];
  readonly trees: number;
  readonly durationMs: number;
  readonly pidNamespace: PidNamespaceMode;
  /** Every restored process, host pid and namespace pid, in the saved order. */
  readonly processes: readonly RestoredProcess[];
  /** With pidNamespace new: the host pid of the namespace's init (agentd's holder, pid 1 inside). */
  readonly namespaceInit?: number;
  /** The systemd scope unit the restored processes are in, when the restore made one. */
  readonly unit?: string;
  /** Differences from the dumping host that did not stop the restore (src/checkpoint/compat.ts). */
  readonly warnings: readonly string[];
  /** The state the restore left the cgroup in (`after`). */
  readonly state: 'THAWED' | 'FROZEN';
}

export interface RecoveryReport {
  /** Cgroups an interrupted checkpoint left behind, and what was done about them. */
  readonly cgroups: readonly { cgroup: string; hierarchy: Hierarchy; found: string; action: string }[];
  /** Temporary image directories removed. */
  readonly removedTemporaryImages: readonly string[];
  /** `.deleting-*` directories of deletes cut short, whose files are now removed. */
  readonly finishedDeletes: readonly string[];
  /** Lock files nobody held and no record needed (finished records, or none), removed. */
  readonly removedLockFiles: readonly string[];
  /** Image roots not cleaned because they failed their check (a symlink, writable by others...). */
  readonly skippedImageDirs: readonly { dir: string; reason: string }[];
}
