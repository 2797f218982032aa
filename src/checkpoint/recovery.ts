// What an agent that died mid-operation left behind, found when the next one starts: lock files
// nobody holds whose record is not finished (the kernel dropped the flock with the dead holder; a
// holder that lives removes its file when it releases it), `.partial-*` image directories and the
// `.deleting-*` ones of deletes cut short (in every image root). Cgroups go back to the state the
// record says they had.

import { rmSync } from 'node:fs';
import { resolve } from 'node:path';
import { randomBytes } from 'node:crypto';
import { resolveCgroup, type CgroupRef } from '../cgroup/index.js';
import type { CgroupControl, LockHolder } from '../lock/index.js';
import { endOrphanedCriu } from './orphans.js';
import { applyAfterPolicy, returnToPrior } from './policy.js';
import { removeTree, type ImageStore } from './image-store.js';
import { AFTER_POLICIES, type AfterPolicy, type RecoveryReport } from './types.js';

type RecoveredCgroup = RecoveryReport['cgroups'][number];

async function recoverOne(control: CgroupControl, record: LockHolder): Promise<RecoveredCgroup> {
  const base = { cgroup: record.cgroup, hierarchy: record.hierarchy };
  let found = `an interrupted ${record.operation} (agent pid ${record.pid}, request ${record.requestId}, phase ${record.phase}, since ${record.since})`;
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
