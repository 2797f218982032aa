// The CHECKPOINTING lock: agentd's fourth freezer state, held with a kernel flock on one file per
// cgroup (freezer.md, CHECKPOINTING). CgroupControl is the guarded entry point for every caller
// that changes a cgroup's freezer state.

export { CgroupControl, DEFAULT_RUN_DIR, newRequestId } from './control.js';
export { lockFileName } from './lock-name.js';
export {
  PHASE_CHECKPOINT_ENDED,
  PHASE_CHECKPOINTING,
  PHASE_FINISHED,
  PHASE_STARTED,
  type AgentState,
  type Breach,
  type CgroupLease,
  type CgroupStatus,
  type CheckpointConsistency,
  type CheckpointHold,
  type LockHolder,
  type LockOperation,
} from './types.js';
