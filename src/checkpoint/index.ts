// Checkpoint orchestration: freeze, lock, dump every process tree with CRIU, verify, manifest,
// release, apply the policy; restore in the saved order; the image store; crash recovery.

export { Checkpointer, type CheckpointerOptions } from './checkpointer.js';
export type { RestoredTerminal, RestoreHooks } from './restore-flow.js';
export { AFTER_POLICIES, PID_NAMESPACE_MODES, RESTORE_POLICIES } from './types.js';
/** The digest a manifest records for a file read front to back (src/checkpoint/digest.ts), and its piece-size check. */
export { isChunkBytes, StreamingDigest } from './digest.js';
export { fsyncDirectory, newCheckpointId, removeTree, writeFileDurably, MANIFEST_FILE, type ImageStore } from './image-store.js';
export type {
  AfterPolicy,
  CheckpointListing,
  CheckpointOptions,
  CheckpointSummary,
  FailureRecord,
  ImageFile,
  ImportRecord,
  Manifest,
  OperationHooks,
  PidNamespaceMode,
  ProcessRecord,
  ProgressEvent,
  PruneOptions,
  PruneResult,
  RecoveryReport,
  RestoredProcess,
  RestoreOptions,
  RestorePolicy,
  RestoreSummary,
  Stage,
  Timings,
  TreeRecord,
} from './types.js';
