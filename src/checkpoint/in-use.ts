// Which checkpoints an operation of this process is reading right now. A restore reads the image
// files from its checksum pass until the last CRIU is done with them; deleting the image in that
// time made the restore fail half-way on missing files ("the checkpoint is corrupt"), and a second
// restore of the same image can only collide with the first over the same pids. So while an
// operation uses a checkpoint, delete and any other use of it are refused with EBUSY naming it.
//
// One registry for the whole process, keyed by the image's directory: every Checkpointer (the
// daemon's, agentctl's direct mode, a library caller's) sees the same claims. Claims live in
// memory only: another process reading the same image directory is not seen (the lock of src/lock
// guards cgroups, not images).

import { AgentError } from '../errors/index.js';

/** What an operation does with the checkpoint it claims. */
export type CheckpointUse = 'restore' | 'export';

const DOING: Record<CheckpointUse, string> = { restore: 'being restored', export: 'being exported' };

interface Claim {
  readonly id: string;
  readonly use: CheckpointUse;
  readonly requestId: string;
  readonly since: Date;
}

const claims = new Map<string, Claim>();

function busy(claim: Claim): AgentError {
  return new AgentError('EBUSY', `checkpoint ${claim.id} is ${DOING[claim.use]} (request ${claim.requestId}); try again when it is done`, {
    details: { checkpoint: claim.id, use: claim.use, requestId: claim.requestId, since: claim.since.toISOString() },
  });
}

/** EBUSY naming the operation when the checkpoint in `dir` is in use. */
export function refuseIfInUse(dir: string): void {
  const claim = claims.get(dir);
  if (claim) throw busy(claim);
}

/**
 * Claims the checkpoint in `dir` for one operation, or EBUSY naming the one that has it. Returns
 * the release, which is idempotent. Synchronous, so that a check and its claim cannot be split.
 */
export function claimCheckpoint(dir: string, id: string, use: CheckpointUse, requestId: string): () => void {
  refuseIfInUse(dir);
  const claim: Claim = { id, use, requestId, since: new Date() };
  claims.set(dir, claim);
  return () => {
    if (claims.get(dir) === claim) claims.delete(dir);
  };
}
