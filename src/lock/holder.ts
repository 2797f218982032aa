// The lock file's diagnostic record (one JSON line) and the EBUSY messages built from it.

import { existsSync } from 'node:fs';
import { AgentError } from '../errors/index.js';
import { describeCgroup, type CgroupRef } from '../cgroup/index.js';
import {
  PHASE_CHECKPOINTING,
  PHASE_FINISHED,
  type LockHolder,
  type LockOperation,
  type RecordedProcess,
  type RestoringTree,
} from './types.js';

const OPERATIONS: readonly LockOperation[] = ['freeze', 'thaw', 'checkpoint', 'restore', 'kill'];
const STATES = ['THAWED', 'FREEZING', 'FROZEN'];

export function serializeHolder(holder: LockHolder): string {
  const { lockFile: _notWritten, ...record } = holder;
  return JSON.stringify(record) + '\n';
}

/** Parses the first line of a lock file; undefined when it is empty, torn or not ours. */
export function parseHolder(text: string, lockFile: string): LockHolder | undefined {
  const line = text.split('\n', 1)[0];
  if (!line) return undefined;
  let value: unknown;
  try {
    value = JSON.parse(line);
  } catch {
    return undefined;
  }
  if (typeof value !== 'object' || value === null) return undefined;
  const r = value as Record<string, unknown>;
  if (
    typeof r.pid !== 'number' ||
    typeof r.requestId !== 'string' ||
    !OPERATIONS.includes(r.operation as LockOperation) ||
    typeof r.phase !== 'string' ||
    typeof r.cgroup !== 'string' ||
    (r.hierarchy !== 'v1' && r.hierarchy !== 'v2') ||
    typeof r.since !== 'string'
  ) {
    return undefined;
  }
  const holder: LockHolder = {
    pid: r.pid,
    requestId: r.requestId,
    operation: r.operation as LockOperation,
    phase: r.phase,
    cgroup: r.cgroup,
    hierarchy: r.hierarchy,
    since: r.since,
    lockFile,
  };
  if (typeof r.priorState === 'string' && STATES.includes(r.priorState)) holder.priorState = r.priorState as LockHolder['priorState'];
  if (typeof r.imageDir === 'string') holder.imageDir = r.imageDir;
  if (typeof r.checkpointingSince === 'string') holder.checkpointingSince = r.checkpointingSince;
  // A restore's progress (src/checkpoint/restore-flow.ts): kept only when well formed, since recovery
  // kills what it names.
  if (Array.isArray(r.restoredProcesses) && r.restoredProcesses.every(isRecordedProcess)) holder.restoredProcesses = r.restoredProcesses;
  if (isRestoringTree(r.restoringTree)) holder.restoringTree = r.restoringTree;
  if (Array.isArray(r.createdCgroups) && r.createdCgroups.every((d) => typeof d === 'string' && d.startsWith('/'))) {
    holder.createdCgroups = r.createdCgroups as string[];
  }
  if (typeof r.workDir === 'string' && r.workDir.startsWith('/')) holder.workDir = r.workDir;
  return holder;
}

const isPid = (v: unknown): v is number => Number.isSafeInteger(v) && (v as number) > 0;

function isRecordedProcess(v: unknown): v is RecordedProcess {
  const p = v as Partial<RecordedProcess> | null;
  return typeof p === 'object' && p !== null && isPid(p.pid) && Number.isSafeInteger(p.startTime);
}

function isRestoringTree(v: unknown): v is RestoringTree {
  const t = v as Partial<RestoringTree> | null;
  return (
    typeof t === 'object' &&
    t !== null &&
    Number.isSafeInteger(t.index) &&
    Array.isArray(t.pids) &&
    t.pids.every(isPid) &&
    Number.isSafeInteger(t.notBefore)
  );
}

/**
 * Whether the holder's cgroup reads CHECKPOINTING: a checkpoint that has begun CHECKPOINTING (from
 * FROZEN) and not yet released its lock: through CRIU's dump, the checksums, the manifest and the
 * policy alike, since every freezer change is refused with EBUSY through all of them.
 */
export function isCheckpointing(holder: LockHolder | undefined): boolean {
  return isLive(holder) && holder.operation === 'checkpoint' && holder.checkpointingSince !== undefined;
}

/** A record of an operation that never finished: what a live holder says, or what a dead one left. */
export function isLive(holder: LockHolder | undefined): holder is LockHolder {
  return holder !== undefined && holder.phase !== PHASE_FINISHED;
}

/**
 * The record of a locked file, when it can be the holder's: unfinished, and written by a process
 * that still exists. Otherwise the lock changed hands since (to a tool such as flock(1), or to a
 * holder that has not written its record yet) and the record names someone else.
 */
export function holderOfLocked(record: LockHolder | undefined): LockHolder | undefined {
  return isLive(record) && existsSync(`/proc/${record.pid}`) ? record : undefined;
}

/** Local wall-clock time of day, as an operator reading the message would say it: 12:01:03. */
export function timeOfDay(iso: string): string {
  const date = new Date(iso);
  if (Number.isNaN(date.getTime())) return iso;
  return date.toTimeString().slice(0, 8);
}

/** What a checkpoint past CRIU's dump is doing, for an EBUSY message. */
function phaseText(phase: string): string {
  if (phase.startsWith('after-')) return `its image is being checksummed and published, --after ${phase.slice('after-'.length)}`;
  return `its image is being checksummed and published`;
}

/**
 * `cgroup v2:jobs/x is CHECKPOINTING (request 7f3a, since 12:01:03)` or
 * `cgroup v1:jobs/x is busy: a freeze (request 9b1c) is in progress since 12:01:03`; the whole
 * record (pid included) travels in details.holder.
 */
export function busyError(ref: CgroupRef, holder: LockHolder | undefined, lockFile: string): AgentError {
  const name = describeCgroup(ref);
  if (!isLive(holder)) {
    return new AgentError('EBUSY', `cgroup ${name} is busy: another process holds its lock ${lockFile} (it has not recorded who yet)`, {
      details: { cgroup: ref.path, hierarchy: ref.hierarchy, lockFile },
    });
  }
  const since = timeOfDay(holder.since);
  const message = isCheckpointing(holder)
    ? `cgroup ${name} is CHECKPOINTING (request ${holder.requestId}, since ${since}${holder.phase === PHASE_CHECKPOINTING ? '' : `; ${phaseText(holder.phase)}`})`
    : `cgroup ${name} is busy: a ${holder.operation} (request ${holder.requestId}) is in progress since ${since}`;
  return new AgentError('EBUSY', message, { details: { cgroup: ref.path, hierarchy: ref.hierarchy, lockFile, holder } });
}
