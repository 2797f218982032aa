// Restoring a checkpoint: verify every image file against the manifest first, check that it fits
// this host (./compat.ts), make sure the saved pids are free (./pid-holders.ts; not needed in a new
// PID namespace, ./pid-placement.ts), then restore the process trees one by one in their saved
// order (src/restart), into the original cgroup or another one. A failure part-way kills what was
// already restored.

import { existsSync, mkdirSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { randomBytes } from 'node:crypto';
import {
  backoff,
  createPlanned,
  describeCgroup,
  freezerStateOf,
  outermostToMake,
  planCgroup,
  removeCreated,
  removeEmptyCgroups,
  type CgroupPlan,
  type Freezer,
} from '../cgroup/index.js';
import type { CgroupLease, RecordedProcess } from '../lock/index.js';
import { startCriuRestoreOnTerminal } from '../criu/index.js';
import { restoreInOrder } from '../restart/index.js';
import { AgentError } from '../errors/index.js';
import { readProcStat } from '../proc/index.js';
import { checkMayCreate, checkScopeFree, holdScope, restoreScopeName, startScope, SYSTEMD_RUNTIME_DIR } from '../systemd/index.js';
import { verifyFiles } from './checksums.js';
import { restoreParentLinks } from './pre-dump.js';
import { waitForSavedPids } from './pid-holders.js';
import { cgroupsCriuMade } from './stray-cgroups.js';
import { createSubCgroups, planSubCgroups, putBack, treeCgroups } from './subtree.js';
import type { Manifest, OperationHooks, RestoreOptions, RestoreSummary, TreeRecord } from './types.js';
import type { FlowContext } from './flow-context.js';
import { checkCompat } from './compat.js';
import { hostPlacement, newNamespacePlacement, type PidPlacement } from './pid-placement.js';

const DEFAULT_TIMEOUT_MS = 5 * 60_000;

/**
 * Where a restore stands, in its lock record (src/lock), for the recovery of an agent that dies in
 * the middle (./recovery.ts, docs/restart.md): RESTORING while CRIU restores the trees one by one
 * (every process so far is stopped), STARTING from the moment they are put back in their cgroups
 * and started, RESTORED once all have been started. A record found in one of the first two is
 * undone; one in the last is left alone, as is a restore whose lease was released.
 */
export const RESTORE_PHASE_RESTORING = 'restoring';
export const RESTORE_PHASE_STARTING = 'starting';
export const RESTORE_PHASE_RESTORED = 'restored';

/** The processes as the lock record names them: host pid and start time (field 22 of /proc/PID/stat). */
function recorded(pids: readonly number[]): RecordedProcess[] {
  return pids.flatMap((pid) => {
    const stat = readProcStat(pid);
    return stat ? [{ pid, startTime: stat.startTime }] : [];
  });
}

/** A pty a --shell-job tree was restored onto; the caller owns it (its output, its input). */
export interface RestoredTerminal {
  readonly tree: number;
  readonly pid: number;
  readonly write: (data: string) => void;
  readonly resize: (cols: number, rows: number) => void;
  readonly onData: (listener: (data: string) => void) => { dispose(): void };
  readonly exited: Promise<{ exitCode: number; signal?: number }>;
}

export interface RestoreHooks extends OperationHooks {
  readonly onTerminal?: (terminal: RestoredTerminal) => void;
}

/**
 * Where the restore goes, checked but not made: the target cgroup, or what creating it would take.
 * CRIU cannot restore into a frozen cgroup (src/criu/restore.ts), and a cgroup made under a frozen
 * parent starts frozen: both are refused here, before anything is created.
 */
function planTarget(manifest: Manifest, options: RestoreOptions): CgroupPlan {
  const hierarchy = options.hierarchy ?? manifest.hierarchy;
  if (hierarchy !== manifest.hierarchy) {
    throw new AgentError(
      'EINVAL',
      `checkpoint ${manifest.id} was taken in the ${manifest.hierarchy} hierarchy; it cannot be restored into ${hierarchy}`,
    );
  }
  const plan = planCgroup(options.cgroup ?? manifest.cgroup, hierarchy);
  const decides = plan.existing ?? plan.ancestor;
  if (decides) {
    const state = freezerStateOf(decides);
    if (state !== 'THAWED') {
      const name = describeCgroup(decides);
      throw new AgentError(
        'EBUSY',
        plan.existing
          ? `cgroup ${name} is ${state}: CRIU cannot restore into a frozen cgroup; thaw it first`
          : `cgroup ${name} is ${state}: the cgroup ${hierarchy}:${plan.path} the restore would make under it would be frozen too, and CRIU cannot restore into a frozen cgroup; thaw ${name} first`,
      );
    }
  }
  return plan;
}

function isStopped(pid: number): boolean {
  return readProcStat(pid)?.state === 'T';
}

async function waitUntilStopped(tree: TreeRecord, timeoutMs: number): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (let attempt = 0; !tree.processes.every((p) => isStopped(p.pid)); attempt++) {
    if (Date.now() > deadline)
      throw new AgentError('ETIMEDOUT', `restored tree ${tree.index} (root ${tree.root}) never reached its stopped state`);
    await backoff(attempt);
  }
}

/**
 * Every tree was restored stopped (--leave-stopped), so none ran before all were back and a failed
 * later tree could be undone before an earlier one did anything. Freezing around the SIGCONTs
 * starts them all at one instant rather than one by one; a cgroup to be left FROZEN stays frozen
 * with them continued, so a later thaw lets them run as they were when checkpointed (not stopped).
 */
async function startTogether(freezer: Freezer, pids: readonly number[], leave: 'THAWED' | 'FROZEN'): Promise<void> {
  await freezer.freeze();
  for (const pid of pids) {
    try {
      process.kill(pid, 'SIGCONT');
    } catch {
      // exited already
    }
  }
  if (leave === 'THAWED') await freezer.thaw();
}

/** The state a restore leaves: the checkpoint's prior state unless the request chose. */
function restoredState(manifest: Pick<Manifest, 'priorState'>, after: RestoreOptions['after']): 'THAWED' | 'FROZEN' {
  if (after === 'thawed') return 'THAWED';
  if (after === 'frozen') return 'FROZEN';
  return manifest.priorState === 'FROZEN' ? 'FROZEN' : 'THAWED';
}

/** The compatibility check (./compat.ts), its CRIU log in a directory of its own, removed after. */
async function checkHost(
  ctx: FlowContext,
  manifest: Manifest,
  dir: string,
  options: RestoreOptions,
  timeoutMs: number,
  signal?: AbortSignal,
): Promise<string[]> {
  const workDir = ctx.control.scratchDir(`compat-${manifest.id}-`);
  try {
    return await checkCompat(manifest, dir, ctx.criu, { force: options.force, workDir, timeoutMs, signal });
  } finally {
    rmSync(workDir, { recursive: true, force: true });
  }
}

const VERIFY_PROGRESS_MS = 200;

/** The scope a restore's processes become, and how (src/systemd/restore-scope.ts), or none. */
interface ScopePlan {
  readonly name: string;
  /** v2: the restore goes into the scope's cgroup, made first. v1: the restored pids are handed to it. */
  readonly mode: 'target' | 'adopt';
}

/**
 * Whether this restore makes a scope: when it names one, or by the agent's default (--restore-scope)
 * unless it names a v2 cgroup of its own (a v2 scope is the cgroup). Checked before anything changes:
 * the name, systemd as PID 1, and that systemd has no unit of that name.
 */
async function planScope(ctx: FlowContext, manifest: Manifest, options: RestoreOptions): Promise<ScopePlan | undefined> {
  if (options.unit === false) return undefined;
  const hierarchy = options.hierarchy ?? manifest.hierarchy;
  const asked = options.unit !== undefined;
  if (!asked && (!ctx.restoreScopes || (hierarchy === 'v2' && options.cgroup !== undefined))) return undefined;
  const name = restoreScopeName(manifest.id, asked ? options.unit : undefined);
  if (!existsSync(SYSTEMD_RUNTIME_DIR)) {
    throw new AgentError(
      'EINVAL',
      `the restore asks for scope unit ${name}, but systemd is not the init system here (no ${SYSTEMD_RUNTIME_DIR}): restore without --unit`,
    );
  }
  if (hierarchy === 'v2' && options.cgroup !== undefined) {
    throw new AgentError(
      'EINVAL',
      `on cgroup v2 the cgroup of scope ${name} is where its processes go: give --cgroup or --unit, not both (--no-unit with --cgroup)`,
    );
  }
  await checkScopeFree(name);
  return { name, mode: hierarchy === 'v2' ? 'target' : 'adopt' };
}

export async function runRestore(ctx: FlowContext, id: string, options: RestoreOptions, hooks: RestoreHooks = {}): Promise<RestoreSummary> {
  const started = Date.now();
  const progress = hooks.onProgress ?? (() => undefined);
  const manifest = ctx.store.readManifest(id);
  const dir = ctx.store.finalDir(id);
  // Every check (checksums, target usable, saved pids free, the scope's name) comes before anything
  // changes: a refused restore creates no cgroup, no scope and takes no lock.
  const total = manifest.files.reduce((sum, f) => sum + f.size, 0);
  let verified = 0;
  let shownAt = 0;
  progress({ stage: 'verify', message: `checking ${manifest.files.length} image files`, bytes: 0, total });
  await verifyFiles(dir, manifest.files, (n) => {
    verified += n;
    // one line per VERIFY_PROGRESS_MS at most: a large image has a piece done every few ms
    if (Date.now() - shownAt < VERIFY_PROGRESS_MS && verified < total) return;
    shownAt = Date.now();
    progress({ stage: 'verify', message: `checking ${manifest.files.length} image files`, bytes: verified, total });
  });
  const scope = await planScope(ctx, manifest, options);
  // A v2 scope's cgroup exists only once the scope does: planned after it is made, below.
  const early = scope?.mode === 'target' ? undefined : planTarget(manifest, options);
  const pidNamespace = options.pidNamespace ?? 'host';
  const shellJob = !!manifest.options.shellJob;
  if (pidNamespace === 'new' && shellJob) {
    throw new AgentError('EINVAL', `checkpoint ${id} was taken with --shell-job: restoring it into a new PID namespace is not supported`);
  }
  // The sub-cgroups the processes were in, checked now and made before CRIU runs (./subtree.ts).
  const earlySubs = early && planSubCgroups(manifest, early.path, early.hierarchy);
  // A v2 restore scope is made with Delegate=yes: what goes below it is agentd's to make.
  if (early) await checkMayCreate(early.hierarchy, outermostToMake([early, ...earlySubs!]));
  const timeoutMs = options.timeoutMs ?? DEFAULT_TIMEOUT_MS;
  const warnings = await checkHost(ctx, manifest, dir, options, timeoutMs, hooks.signal);
  // In a new namespace the saved pids are free by construction. A caller that gave a timeout lets
  // zombies hold the pids that long; otherwise the wait has its own bound (./pid-holders.ts).
  if (pidNamespace === 'host') await waitForSavedPids(manifest, progress, { signal: hooks.signal, waitMs: options.timeoutMs });

  // The first change: the v2 scope, held by a placeholder that outlives the restore's own time limit
  // only if this agent dies, and is killed once the restore is over.
  const savedPids = new Set(manifest.trees.flatMap((t) => t.processes.map((p) => p.pid)));
  const held =
    scope?.mode === 'target'
      ? await holdScope(scope.name, `agentd: restore of checkpoint ${id}`, savedPids, timeoutMs + 60_000)
      : undefined;
  try {
    const plan = early ?? planTarget(manifest, { ...options, cgroup: held!.cgroup, hierarchy: 'v2' });
    const subPlans = earlySubs ?? planSubCgroups(manifest, plan.path, plan.hierarchy);
    const summary = await restoreInto(ctx, manifest, { plan, subPlans, options, hooks, warnings, scope, started, timeoutMs });
    return scope ? { ...summary, unit: scope.name } : summary;
  } finally {
    held?.release();
  }
}

interface RestoreTarget {
  readonly plan: CgroupPlan;
  readonly subPlans: ReturnType<typeof planSubCgroups>;
  readonly options: RestoreOptions;
  readonly hooks: RestoreHooks;
  readonly warnings: string[];
  readonly scope: ScopePlan | undefined;
  readonly started: number;
  readonly timeoutMs: number;
}

/** The restore proper, every check passed: cgroups made, lock taken, trees restored and started. */
async function restoreInto(ctx: FlowContext, manifest: Manifest, t: RestoreTarget): Promise<RestoreSummary> {
  const { plan, subPlans, options, hooks, warnings, scope, started, timeoutMs } = t;
  const { id } = manifest;
  const dir = ctx.store.finalDir(id);
  const progress = hooks.onProgress ?? (() => undefined);
  const pidNamespace = options.pidNamespace ?? 'host';
  const shellJob = !!manifest.options.shellJob;
  const { ref: target, created } = createPlanned(plan);
  const name = describeCgroup(target);
  let lease: CgroupLease;
  try {
    created.push(...createSubCgroups(subPlans));
    lease = ctx.control.lease(target, { requestId: options.requestId ?? randomBytes(4).toString('hex'), operation: 'restore' });
  } catch (err) {
    removeCreated(created);
    throw err;
  }
  // Written in the same synchronous step as the lease: from here on a dead agent's record names
  // the image (for its orphaned CRIU) and the cgroups to take back.
  const restored: RecordedProcess[] = [];
  try {
    lease.update({ phase: RESTORE_PHASE_RESTORING, imageDir: dir, createdCgroups: created, restoredProcesses: restored });
  } catch (err) {
    lease.release();
    removeCreated(created);
    throw err;
  }
  let workDir: string | undefined;
  let succeeded = false;
  let placement: PidPlacement | undefined;
  // A --shell-job restore keeps CRIU in the foreground on the new pty, with its cgroup yard mounted
  // in the work dir, until the restored root exits: the work dir goes when the last such CRIU does.
  const foregroundCriu: Promise<unknown>[] = [];
  try {
    // Checked again under the lock: someone may have frozen it since the plan.
    if (lease.freezer.state() !== 'THAWED') {
      throw new AgentError('EBUSY', `cgroup ${name} is ${lease.freezer.state()}: CRIU cannot restore into a frozen cgroup; thaw it first`);
    }
    workDir = ctx.control.scratchDir(`restore-${id}-`);
    const work = workDir;
    // CRIU mounts a cgroup yard in each tree's work dir and a killed CRIU leaves it mounted
    // (src/criu/restore.ts): recovery clears it.
    lease.update({ workDir });
    const cgroupsOf = (tree: TreeRecord) => treeCgroups(tree, target.path !== manifest.cgroup ? target : undefined);
    const where = (placement = pidNamespace === 'new' ? await newNamespacePlacement(hooks.signal) : hostPlacement());
    // A new namespace's init is the restore's too: killing it ends everything restored inside.
    if (where.namespaceInit !== undefined) {
      restored.push(...recorded([where.namespaceInit]));
      lease.update({ restoredProcesses: restored });
    }
    // The lower bound on the start time of what CRIU makes for a tree, before it has a start time to
    // record: this agent's own (every such process is started after it).
    const notBefore = readProcStat(process.pid)?.startTime ?? 0;
    const record = (tree: TreeRecord) => {
      restored.push(...recorded(where.processes([tree]).map((p) => p.pid)));
      lease.update({ restoredProcesses: restored });
    };
    await restoreInOrder(
      manifest.trees.map((tree) => ({
        id: `tree-${tree.index}`,
        restore: async (signal: AbortSignal) => {
          progress({ stage: 'restore', tree: tree.index + 1, trees: manifest.trees.length });
          lease.update({
            restoringTree: { index: tree.index, pids: where.mode === 'host' ? tree.processes.map((p) => p.pid) : [], notBefore },
          });
          const treeWork = join(work, `tree-${tree.index}`);
          mkdirSync(treeWork);
          if (tree.preDumps) restoreParentLinks(join(dir, `tree-${tree.index}`), tree.preDumps);
          const common = {
            criuPath: ctx.criu.path,
            leaveStopped: true,
            imagesDir: join(dir, `tree-${tree.index}`),
            workDir: treeWork,
            networkLock: ctx.criu.networkLock,
            fileLocks: !!manifest.options.fileLocks,
            ...cgroupsOf(tree),
            timeoutMs,
            signal,
          };
          if (!shellJob) {
            const done = await where.restoreTree(common);
            record(tree);
            return done;
          }
          const restored = await startCriuRestoreOnTerminal(common);
          foregroundCriu.push(restored.exited);
          // A foreground CRIU writes its pidfile before it stops the tree: a SIGCONT sent before
          // that stop would be lost and leave the tree stopped for good.
          await waitUntilStopped(tree, timeoutMs);
          record(tree);
          hooks.onTerminal?.({
            tree: tree.index,
            pid: restored.pid,
            write: (data) => restored.terminal.write(data),
            resize: (cols, rows) => restored.terminal.resize(cols, rows),
            onData: (listener) => restored.terminal.onData(listener),
            exited: restored.exited,
          });
          return restored;
        },
        undo: () => where.undoTree(tree),
      })),
      { signal: hooks.signal, timeoutMs },
    );
    const processes = where.processes(manifest.trees);
    const pids = processes.map((p) => p.pid);
    lease.update({ phase: RESTORE_PHASE_STARTING });
    // Saved pid -> host pid: the same in the host's namespace, not in a new one.
    const savedToHost = new Map(manifest.trees.flatMap((t) => t.processes).map((p, i) => [p.pid, pids[i]]));
    try {
      // Each process in its own sub-cgroup while every tree is still stopped; ECRIU if one is not.
      putBack(target, manifest, (saved) => savedToHost.get(saved) ?? saved);
    } catch (err) {
      await Promise.all(manifest.trees.map((tree) => where.undoTree(tree)));
      throw new AgentError('ECRIU', `${(err as Error).message}; killed what was restored`, { cause: err });
    }
    // Every process in the target's subtree (where putBack put those CRIU did not place itself).
    const inSubtree = new Set(lease.freezer.subtreeProcesses());
    const astray = pids.filter((pid) => !inSubtree.has(pid));
    if (astray.length > 0) {
      await Promise.all(manifest.trees.map((tree) => where.undoTree(tree)));
      throw new AgentError(
        'ECRIU',
        `restore of ${id}: processes ${astray.join(', ')} did not come back in cgroup ${name}; killed what was restored`,
      );
    }
    if (scope?.mode === 'adopt') {
      // Still stopped: systemd moves them in its own hierarchy only, their freezer cgroups stay.
      const members = where.namespaceInit === undefined ? pids : [where.namespaceInit, ...pids];
      try {
        await startScope(scope.name, members, `agentd: restore of checkpoint ${id}`);
      } catch (err) {
        await Promise.all(manifest.trees.map((tree) => where.undoTree(tree)));
        throw new AgentError((err as AgentError).code ?? 'EIO', `${(err as Error).message}; killed what was restored`, { cause: err });
      }
    }
    where.settle(pids[0]);
    const state = restoredState(manifest, options.after);
    await startTogether(lease.freezer, pids, state);
    lease.update({ phase: RESTORE_PHASE_RESTORED });
    succeeded = true;
    progress({ stage: 'done' });
    return {
      id,
      cgroup: target.path,
      hierarchy: target.hierarchy,
      pids,
      trees: manifest.trees.length,
      durationMs: Date.now() - started,
      pidNamespace,
      processes,
      ...(where.namespaceInit === undefined ? {} : { namespaceInit: where.namespaceInit }),
      warnings,
      state,
    };
  } finally {
    if (!succeeded) await placement?.discard().catch(() => undefined);
    lease.release();
    // What was restored is killed already (restoreInOrder's undo): a cgroup made for it goes too.
    if (!succeeded) removeCreated(created);
    if (workDir !== undefined) {
      removeEmptyCgroups(cgroupsCriuMade(workDir).filter((dir) => !created.includes(dir)));
      const removeWorkDir = () => rmSync(workDir!, { recursive: true, force: true });
      void Promise.all(foregroundCriu)
        .then(removeWorkDir)
        .catch(() => undefined);
    }
  }
}
