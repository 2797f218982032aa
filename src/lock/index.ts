// The CHECKPOINTING lock: agentd's fourth freezer state, held with a kernel flock on one file per
// cgroup (docs/lock.md; its rules are in docs/freezer.md). CgroupControl is the guarded entry point
// for every caller that changes a cgroup's freezer state: the daemon, agentctl in direct mode,
// checkpoint orchestration.

export { CgroupControl } from './control.js';
/** What freezeAll and thawAll did to each cgroup, in the details of their error. */
export type { BatchOutcome, BatchResult } from './batch.js';
export type {
  AgentState,
  Breach,
  CgroupLease,
  CgroupStatus,
  CheckpointConsistency,
  CheckpointHold,
  LockHolder,
  LockOperation,
  RecordedProcess,
  RestoringTree,
  UpdatableFields,
} from './types.js';
