// What an agent that died mid-operation left behind, found when the next one starts: lock files
// nobody holds whose record is not finished (the kernel dropped the flock with the dead holder; a
// holder that lives removes its file when it releases it), `.partial-*` image directories and the
// `.deleting-*` ones of deletes cut short (in every image root). Cgroups go back to the state the
// record says they had. A restore cut short is undone (docs/restart.md): its orphaned CRIU is ended,
// the processes it had restored (all still stopped, or frozen) are killed, and the cgroups it made
// are removed; the checkpoint itself was only read, so it stays good to restore again.

import { existsSync, readdirSync, realpathSync, rmSync } from 'node:fs';
import { basename, join, resolve } from 'node:path';
import { randomBytes } from 'node:crypto';
import {
  backoff,
  killListed,
  removeCreated,
  removeEmptyCgroups,
  resolveCgroup,
  sigkill,
  waitForPidsGone,
  type CgroupRef,
} from '../cgroup/index.js';
import type { CgroupControl, LockHolder } from '../lock/index.js';
import { removeCgroupYards } from '../criu/index.js';
import { readMountinfo, readProcStat, type ProcStat } from '../proc/index.js';
import { RESTORE_PHASE_RESTORING, RESTORE_PHASE_STARTING } from './restore-flow.js';
import { endOrphanedCriu } from './orphans.js';
import { cgroupsCriuMade } from './stray-cgroups.js';
import { applyAfterPolicy, returnToPrior } from './policy.js';
import { removeTree, type ImageStore } from './image-store.js';
import { AFTER_POLICIES, type AfterPolicy, type RecoveryReport } from './types.js';

type RecoveredCgroup = RecoveryReport['cgroups'][number];

// How long killed processes get to be gone, and emptied cgroups to become removable.
const KILL_WAIT_MS = 10_000;
const RMDIR_WAIT_MS = 5_000;

/**
 * Whether a record is a restore that had not started its processes: its trees were being restored
 * (every process so far stopped) or being put back and started. Such a restore is undone. Past
 * that (RESTORED), or with no record of its progress (an older agentd, or the instant between the
 * lease and its first record), the general rules apply: it is left as it is.
 */
export function isUnfinishedRestore(record: LockHolder): boolean {
  return record.operation === 'restore' && (record.phase === RESTORE_PHASE_RESTORING || record.phase === RESTORE_PHASE_STARTING);
}

/** The processes an unfinished restore left: those still its own (to kill), and those recorded but gone. */
export interface RestoreLeftovers {
  readonly kill: number[];
  readonly gone: number[];
}

/**
 * Which recorded processes are still the restore's, judged by their stat (a ProcStat reader, so the
 * rule can be tested on its own): a restored process only with the start time recorded for it (a
 * pid freed and taken since by someone else is not ours); one of the tree being restored, which had
 * no start time to record yet, only if it started after the agent did (`notBefore`). Zombies are
 * dead already.
 */
export function restoreLeftovers(record: LockHolder, statOf: (pid: number) => ProcStat | undefined): RestoreLeftovers {
  const kill: number[] = [];
  const gone: number[] = [];
  const judge = (pid: number, ours: (startTime: number) => boolean) => {
    if (kill.includes(pid) || gone.includes(pid)) return;
    const stat = statOf(pid);
    (stat !== undefined && stat.state !== 'Z' && ours(stat.startTime) ? kill : gone).push(pid);
  };
  for (const p of record.restoredProcesses ?? []) judge(p.pid, (t) => t === p.startTime);
  const tree = record.restoringTree;
  for (const pid of tree?.pids ?? []) judge(pid, (t) => t >= tree!.notBefore);
  return { kill, gone };
}

/** Removes the cgroups a restore made, innermost first, waiting a little for killed tasks to leave them; those left. */
async function removeEmptied(created: readonly string[]): Promise<string[]> {
  const deadline = Date.now() + RMDIR_WAIT_MS;
  for (let attempt = 0; ; attempt++) {
    removeCreated(created);
    const left = created.filter((dir) => existsSync(dir));
    if (left.length === 0 || Date.now() >= deadline) return left;
    await backoff(attempt);
  }
}

const list = (pids: readonly number[]) => pids.join(', ');

/**
 * Clears a dead restore's scratch directory: the cgroup yards its killed CRIU left mounted in each
 * tree's work dir, then the directory itself, unless something is still mounted below it. Only a
 * directory under the run directory (where scratchDir makes them) is touched. Says what was done.
 */
/** Whether dir lies under the run directory, where scratchDir makes work dirs: only such a record's work dir is read or removed. */
const inRunDir = (control: CgroupControl, dir: string) => resolve(dir).startsWith(resolve(control.runDir) + '/');

async function clearWorkDir(control: CgroupControl, workDir: string): Promise<string | undefined> {
  const dir = resolve(workDir);
  if (!inRunDir(control, dir) || !existsSync(dir)) return undefined;
  let entries: string[] = [];
  try {
    entries = readdirSync(dir);
  } catch {
    // unreadable: left for the check below
  }
  const yards: string[] = [];
  for (const entry of entries) yards.push(...(await removeCgroupYards(join(dir, entry))));
  const real = realpathSync(dir);
  if (readMountinfo().some((m) => m.mountPoint.startsWith(real + '/'))) return `left its work dir ${dir}: something is still mounted in it`;
  rmSync(dir, { recursive: true, force: true });
  return yards.length > 0 ? `unmounted the cgroup yard${yards.length === 1 ? '' : 's'} its CRIU left and removed its work dir` : undefined;
}

/** Undoes a restore cut short (isUnfinishedRestore): nothing it made is left, and the report says what was found and done. */
async function undoRestore(control: CgroupControl, record: LockHolder, found: string): Promise<RecoveredCgroup> {
  const base = { cgroup: record.cgroup, hierarchy: record.hierarchy };
  // Its CRIU first: one still at work may make more processes (a CRIU holding its tasks is let
  // finish, then they are killed with the rest).
  const orphan = record.imageDir ? await endOrphanedCriu(record.imageDir) : undefined;
  if (orphan) found = `${found}; ${orphan}`;
  const { kill, gone } = restoreLeftovers(record, readProcStat);
  let ref: CgroupRef | undefined;
  try {
    ref = resolveCgroup(record.cgroup, { hierarchy: record.hierarchy });
  } catch {
    // Gone with its subtree: nothing restored can be frozen in it.
  }
  let allGone: boolean;
  if (ref) {
    const lease = control.lease(ref, { requestId: `recover-${randomBytes(3).toString('hex')}`, operation: 'restore' });
    try {
      // The restore took a THAWED cgroup (restore-flow.ts refuses any other) and froze it only to
      // start its processes: thawing it after the kills puts it back as it was.
      allGone = await killListed(lease.freezer, kill, KILL_WAIT_MS);
    } finally {
      lease.release();
    }
  } else {
    sigkill(kill);
    allGone = await waitForPidsGone(kill, Date.now() + KILL_WAIT_MS);
    control.forgetStale(record);
  }
  // What its CRIU made besides (src/checkpoint/stray-cgroups.ts), read before the work dir goes.
  const criuMade = record.workDir && inRunDir(control, record.workDir) ? cgroupsCriuMade(record.workDir) : [];
  const work = record.workDir ? await clearWorkDir(control, record.workDir) : undefined;
  const created = record.createdCgroups ?? [];
  const left = await removeEmptied(created);
  const removed = created.filter((dir) => !left.includes(dir));
  const strays = removeEmptyCgroups(criuMade.filter((dir) => !created.includes(dir)));
  const id = record.imageDir ? basename(record.imageDir) : undefined;
  const what = [
    kill.length > 0
      ? `killed its ${kill.length} restored process${kill.length === 1 ? '' : 'es'} (${list(kill)})${record.phase === RESTORE_PHASE_RESTORING ? ', none had run yet' : ''}${allGone ? '' : ', but not all were gone 10 s later'}`
      : 'no restored process was left',
    ...(gone.length > 0 ? [`${gone.length} recorded (${list(gone)}) had ended already or are other processes now`] : []),
    ...(removed.length > 0 ? [`removed the cgroup${removed.length === 1 ? '' : 's'} it made (${removed.join(', ')})`] : []),
    ...(left.length > 0 ? [`could not remove ${left.join(', ')} (not empty)`] : []),
    ...(strays.length > 0 ? [`removed the empty cgroup${strays.length === 1 ? '' : 's'} its CRIU made again (${strays.join(', ')})`] : []),
    ...(work ? [work] : []),
    ...(id ? [`checkpoint ${id} is unchanged and can be restored again`] : []),
  ];
  return { ...base, found, action: `undid the restore: ${what.join('; ')}` };
}

async function recoverOne(control: CgroupControl, record: LockHolder): Promise<RecoveredCgroup> {
  const base = { cgroup: record.cgroup, hierarchy: record.hierarchy };
  let found = `an interrupted ${record.operation} (agent pid ${record.pid}, request ${record.requestId}, phase ${record.phase}, since ${record.since})`;
  if (isUnfinishedRestore(record)) return undoRestore(control, record, found);
  let ref: CgroupRef;
  try {
    ref = resolveCgroup(record.cgroup, { hierarchy: record.hierarchy });
  } catch {
    // Nothing to put right: the record has served its purpose, and its file would be found again
    // at every start.
    control.forgetStale(record);
    return { ...base, found, action: 'the cgroup no longer exists; nothing to do (its lock file is removed)' };
  }
  const lease = control.lease(ref, { requestId: `recover-${randomBytes(3).toString('hex')}`, operation: record.operation });
  try {
    // A CRIU the dead agent started may still hold the tasks: nothing is decided before it has ended.
    const orphan = record.imageDir ? await endOrphanedCriu(record.imageDir) : undefined;
    if (orphan) found = `${found}; ${orphan}`;
    const state = lease.freezer.state();
    const after = record.phase.startsWith('after-') ? (record.phase.slice('after-'.length) as AfterPolicy) : undefined;
    if (record.operation === 'checkpoint' && record.priorState && after && AFTER_POLICIES.includes(after)) {
      // The image was already published; finish what the request asked for.
      const final = await applyAfterPolicy(lease.freezer, after, record.priorState === 'FROZEN' ? 'FROZEN' : 'THAWED');
      return { ...base, found: `${found}, kernel state ${state}`, action: `completed --after ${after}: ${final}` };
    }
    if (record.operation === 'checkpoint' && record.priorState) {
      const prior = record.priorState === 'FROZEN' ? 'FROZEN' : 'THAWED';
      await returnToPrior(lease.freezer, prior);
      return {
        ...base,
        found: `${found}, kernel state ${state}`,
        action: `returned to its prior state ${prior} (now ${lease.freezer.state()})`,
      };
    }
    if (state === 'FREEZING') {
      // A freeze that never finished: FREEZING is never a state to leave a cgroup in.
      await lease.freezer.thaw();
      return { ...base, found: `${found}, kernel state FREEZING`, action: 'thawed it (the freeze never completed)' };
    }
    return { ...base, found: `${found}, kernel state ${state}`, action: 'left as it is' };
  } finally {
    lease.release();
  }
}

/**
 * The `.partial-*` directories of every image root that exists and passes its check (ensureRoot):
 * a root others may write to is not cleaned as root (anyone could have planted what is there).
 */
function leftoverPartials(stores: readonly ImageStore[]): {
  partials: string[];
  deletions: string[];
  skipped: { dir: string; reason: string }[];
} {
  const partials: string[] = [];
  const deletions: string[] = [];
  const skipped: { dir: string; reason: string }[] = [];
  for (const store of stores) {
    try {
      if (!store.exists()) continue;
      store.ensureRoot();
      partials.push(...store.partials());
      deletions.push(...store.deletions());
    } catch (err) {
      skipped.push({ dir: store.root, reason: (err as Error).message });
    }
  }
  return { partials, deletions, skipped };
}

export async function recover(control: CgroupControl, stores: readonly ImageStore[]): Promise<RecoveryReport> {
  const cgroups: RecoveredCgroup[] = [];
  for (const record of control.staleLocks()) {
    try {
      cgroups.push(await recoverOne(control, record));
    } catch (err) {
      cgroups.push({
        cgroup: record.cgroup,
        hierarchy: record.hierarchy,
        found: `an interrupted ${record.operation}`,
        action: `recovery failed: ${(err as Error).message}`,
      });
    }
  }
  // A .partial-* directory that a lock held right now names is a checkpoint still running (another
  // agent on the same directories): not a leftover. (The record names it in the same synchronous
  // step that makes it, so only a recovery landing between those two statements could miss it.)
  const inUse = new Set(control.heldLocks().flatMap((r) => (r.imageDir ? [resolve(r.imageDir)] : [])));
  const { partials, deletions, skipped } = leftoverPartials(stores);
  const removedTemporaryImages = partials.filter((dir) => !inUse.has(resolve(dir)));
  for (const dir of removedTemporaryImages) {
    // Also a partial no record names any more (its cgroup is gone, say) may still be CRIU's.
    await endOrphanedCriu(dir);
    rmSync(dir, { recursive: true, force: true });
  }
  // Deletes cut short: the checkpoint is gone already (renamed away first); only its files are left.
  for (const dir of deletions) await removeTree(dir);
  // Lock files nobody holds and no record needs (an older agentd left one per cgroup it named).
  const removedLockFiles = control.sweep();
  return { cgroups, removedTemporaryImages, finishedDeletes: deletions, removedLockFiles, skippedImageDirs: skipped };
}
