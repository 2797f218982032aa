// One checkpoint, start to end. The order is the contract:
//   preflight -> freeze (remember the prior state) -> CHECKPOINTING -> one CRIU dump per process tree
//   -> verify nothing is missing -> CHECKPOINTING ends (back to FROZEN) -> then, by policy:
//   - the workload runs again (`thawed`, or `prior` when it was running): the thaw, then checksums,
//     manifest, fsync, atomic rename;
//   - it stays stopped or dies (`frozen`, `killed`, `prior` when it was frozen): checksums,
//     manifest, fsync, atomic rename, then the policy, so a killed workload's image is durable
//     before the kill;
//   -> the lock is released.
// Why (docs/freezer.md, rules 1-5 and "The image after the thaw"): CHECKPOINTING begins only from
// FROZEN, so the freeze comes first, under the same lock, and nobody can thaw in between; the
// consistency verdict comes before any thaw and before the manifest, so an image of a cgroup that
// did not stay stopped is never published; the policy runs once CHECKPOINTING has ended in FROZEN.
// Once CRIU has exited and the verdict is in, the image files are complete and nothing the workload
// does can change them, so hashing and publishing need not keep it stopped.
// Any failure before the thaw puts the cgroup back in its prior state with every process alive; a
// failure after it leaves the workload running. Either way the lock is released and no image looks
// good: it stays `.partial-<id>` until the rename and becomes `<id>.failed`.

import { existsSync, mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { release as kernelRelease } from 'node:os';
import { randomBytes } from 'node:crypto';
import { subCgroups, subtreeMembers, type CgroupRef, type FreezerState } from '../cgroup/index.js';
import type { CgroupLease, CheckpointHold } from '../lock/index.js';
import { networkLockFor, readDumpStats, runCriuDump, type DumpStats } from '../criu/index.js';
import { AgentError, isAgentError } from '../errors/index.js';
import {
  FAILURE_FILE,
  fsyncDirectory,
  MANIFEST_FILE,
  newCheckpointId,
  replaceFileDurably,
  treeBytes,
  writeFileDurably,
} from './image-store.js';
import { hashThreadCount, holdHashThreads, warmHashThreads } from './hash-pool.js';
import { describeFiles } from './checksums.js';
import { ImageFollower } from './follow.js';
import { describeLost, lostProcesses, trapState, type LostProcess } from './lost.js';
import { processTrees, residentBytes } from './process-trees.js';
import { applyAfterPolicy, returnToPrior } from './policy.js';
import { refuseSelfFrozenDescendants, withSubCgroups } from './subtree.js';
import type { AfterPolicy, CheckpointOptions, CheckpointSummary, Manifest, OperationHooks, Stage, Timings, TreeRecord } from './types.js';
import type { FlowContext } from './flow-context.js';
import { recordHost } from './compat.js';
import { dropParentLinks, littleSavedWarning, preDumpDir, preDumpTrees, refuseImpossiblePreDump } from './pre-dump.js';
import { refuseRestartingService } from '../systemd/index.js';

// Room for page-map and metadata images beside the pages themselves (each tree's images are RSS
// plus about 10 KB here, docs/criu.md), and for the filesystem not to be filled to the last block.
const SPACE_MARGIN_BYTES = 16 << 20;
const SPACE_FACTOR = 1.1;
const DEFAULT_TIMEOUT_MS = 10 * 60_000;
const PROGRESS_MS = 200;

class Deadline {
  readonly at: number;
  constructor(
    readonly timeoutMs: number,
    private readonly signal?: AbortSignal,
  ) {
    this.at = Date.now() + timeoutMs;
  }
  /** Milliseconds left; fails (ETIMEDOUT, or EINTR once cancelled) instead of returning nothing left. */
  remainingOrFail(what: string): number {
    if (this.signal?.aborted) throw new AgentError('EINTR', `${what}: the request was cancelled`);
    const left = this.at - Date.now();
    if (left <= 0) throw new AgentError('ETIMEDOUT', `${what}: the checkpoint's ${this.timeoutMs} ms timeout ran out`);
    return left;
  }
}

function priorOf(state: FreezerState): 'THAWED' | 'FROZEN' {
  // A cgroup caught FREEZING (somebody's unfinished freeze) was running; it goes back to running.
  return state === 'FROZEN' ? 'FROZEN' : 'THAWED';
}

function preflight(ctx: FlowContext, lease: CgroupLease, name: string): { prior: 'THAWED' | 'FROZEN'; pids: number[]; resident: number } {
  const status = lease.freezer.status();
  if (status.parentFreezing) {
    throw new AgentError(
      'EBUSY',
      `cgroup ${name} is frozen by its parent ${status.frozenBy}; CRIU must thaw it while it seizes the tasks, so thaw ${status.frozenBy} first`,
    );
  }
  // The whole subtree: the processes of every cgroup below this one are dumped with it (docs/nested.md).
  const pids = lease.freezer.subtreeProcesses();
  if (pids.length === 0) {
    throw new AgentError('ESRCH', `cgroup ${name} has no processes, nor has any cgroup below it: there is nothing to checkpoint`);
  }
  refuseSelfFrozenDescendants(lease.ref, name);
  ctx.store.ensureRoot();
  const resident = residentBytes(pids);
  const needed = Math.ceil(resident * SPACE_FACTOR) + SPACE_MARGIN_BYTES;
  const free = ctx.store.freeBytes();
  if (free < needed) {
    throw new AgentError(
      'ENOSPC',
      `not enough space for a checkpoint of ${name} in ${ctx.store.root}: ${mib(free)} free, ${mib(needed)} needed (resident memory of ${pids.length} processes plus a margin)`,
    );
  }
  return { prior: priorOf(status.state), pids, resident };
}

function mib(bytes: number): string {
  return `${(bytes / (1 << 20)).toFixed(1)} MiB`;
}

/** Every process of the cgroup's subtree must be in one of the dumped trees; anything else is not in the image. */
function checkNothingMissing(lease: CgroupLease, trees: readonly TreeRecord[], name: string): void {
  const saved = new Set(trees.flatMap((t) => t.processes.map((p) => p.pid)));
  const missing = lease.freezer.subtreeProcesses().filter((pid) => !saved.has(pid));
  if (missing.length > 0) {
    throw new AgentError(
      'EINCONSISTENT',
      `cgroup ${name}: processes ${missing.join(', ')} appeared during the checkpoint and are not in the image`,
    );
  }
}

export async function runCheckpoint(
  ctx: FlowContext,
  ref: CgroupRef,
  options: CheckpointOptions,
  hooks: OperationHooks = {},
): Promise<CheckpointSummary> {
  const startedAt = Date.now();
  const name = `${ref.hierarchy}:${ref.path}`;
  const progress = (stage: Stage, extra: Record<string, unknown> = {}) => hooks.onProgress?.({ stage, ...extra });
  // Byte counts arrive every few ms while CRIU writes and pieces are hashed: at most one line per PROGRESS_MS.
  let lastByteProgress = 0;
  const byteProgress = (stage: Stage, extra: Record<string, unknown>) => {
    const now = Date.now();
    if (now - lastByteProgress < PROGRESS_MS) return;
    lastByteProgress = now;
    progress(stage, extra);
  };
  const deadline = new Deadline(options.timeoutMs ?? DEFAULT_TIMEOUT_MS, hooks.signal);
  const after = options.after ?? 'prior';
  const id = newCheckpointId();

  progress('preflight');
  const lease = ctx.control.lease(ref, { requestId: options.requestId ?? randomBytes(4).toString('hex'), operation: 'checkpoint' });
  let prior: 'THAWED' | 'FROZEN' | undefined;
  let hold: CheckpointHold | undefined;
  let partialDir: string | undefined;
  let keepFailed = false;
  let thawed = false;
  let trees: TreeRecord[] = [];
  let follower: ImageFollower | undefined;
  let liftHold: (() => void) | undefined;
  try {
    const checked = preflight(ctx, lease, name);
    prior = checked.prior;
    if (after === 'killed') await refuseRestartingService(checked.pids, name);
    const preDumps = options.preDumps ?? 0;
    await refuseImpossiblePreDump(ctx.criu, preDumps, name, prior);
    deadline.remainingOrFail(`checkpoint of ${name}`);

    partialDir = ctx.store.createPartial(id);
    // Before the freeze: CRIU's record of this CPU does not depend on the workload (0.06 s here).
    const host = await recordHost(ctx.criu, partialDir, deadline.remainingOrFail(`recording the CPU of this host`), hooks.signal);
    let preDumped = new Map<number, { index: number; count: number }>();
    if (preDumps > 0) {
      lease.update({ phase: 'pre-dump', priorState: prior, imageDir: partialDir });
      keepFailed = true;
      const running = subtreeMembers(ref);
      const preTrees = withSubCgroups(processTrees(running.map((m) => m.pid)), running);
      const where = partialDir;
      preDumped = await preDumpTrees(preTrees, preDumps, {
        criuPath: ctx.criu.path,
        partialDir: where,
        freezeCgroup: ref.dir,
        shellJob: options.shellJob,
        logLevel: ctx.criuLogLevel,
        timeoutMs: () => deadline.remainingOrFail(`pre-dumping ${name}`),
        signal: hooks.signal,
        onStep: (round, tree) => progress('pre-dump', { tree: tree + 1, trees: preTrees.length, message: `round ${round}/${preDumps}` }),
      });
    }

    progress('freeze');
    // The hashing threads start now, not once frozen: a thread's start costs tens of ms of CPU
    // (./hash-pool.ts), which beside CRIU would lengthen the frozen window on a 2-core machine.
    warmHashThreads();
    lease.update({ phase: 'freezing', priorState: prior, imageDir: partialDir });
    const freezeStart = Date.now();
    await lease.freezer.freeze({ timeoutMs: Math.min(deadline.remainingOrFail(`freezing ${name}`), 10_000) });
    const frozenAt = Date.now();

    progress('lock');
    hold = lease.beginCheckpoint();
    // CRIU dumps on one core; the pieces it has written are hashed on the others meanwhile.
    liftHold = holdHashThreads(hashThreadCount() - 1);
    let bytes = 0;
    let hashed = 0;
    let treeNo = 0;
    let treeCount = 0;
    const expected = checked.resident;
    follower = new ImageFollower(
      partialDir,
      (n) => (hashed += n),
      (seen) => byteProgress('dump', { tree: treeNo, trees: treeCount, bytes: seen, total: expected }),
    );
    const members = subtreeMembers(ref);
    // A tree builds on its pre-dumps when they were of the same root in the same place; otherwise
    // (the tree changed while it ran) its dump is whole, and its pre-dumps are left unused.
    trees = withSubCgroups(processTrees(members.map((m) => m.pid)), members).map((t) => {
      const pre = preDumped.get(t.root);
      return pre && pre.index === t.index ? { ...t, preDumps: pre.count } : t;
    });
    const subs = subCgroups(ref);

    const stats: DumpStats[] = [];
    for (const [position, planned] of trees.entries()) {
      // Read now that the tree is frozen: none of its processes can open a socket before CRIU runs.
      const networkLock = networkLockFor(
        ctx.criu,
        planned.processes.map((p) => p.pid),
      );
      const tree: TreeRecord = networkLock ? { ...planned, networkLock } : planned;
      trees[position] = tree;
      const dir = join(partialDir, `tree-${tree.index}`);
      // already there when the tree was pre-dumped (its pre-<i> directories are inside)
      mkdirSync(dir, { recursive: true, mode: 0o700 });
      follower.follow(dir);
      treeNo = tree.index + 1;
      treeCount = trees.length;
      progress('dump', { tree: tree.index + 1, trees: trees.length, bytes, total: expected });
      keepFailed = true; // from here on CRIU's log is worth keeping if anything fails
      await hold.criuWindow(() =>
        runCriuDump({
          criuPath: ctx.criu.path,
          wrap: ctx.wrapDump,
          logLevel: ctx.criuLogLevel,
          pid: tree.root,
          imagesDir: dir,
          freezeCgroup: ref.dir,
          shellJob: options.shellJob,
          tcpEstablished: options.tcpEstablished,
          networkLock,
          fileLocks: options.fileLocks,
          ...(tree.preDumps ? { prevImagesDir: preDumpDir(tree.preDumps) } : {}),
          timeoutMs: deadline.remainingOrFail(`dumping tree ${tree.index} of ${name}`),
          signal: hooks.signal,
        }),
      );
      const treeStats = await readDumpStats(dir);
      stats.push(treeStats);
      bytes += treeStats.pagesWritten * 4096;
      progress('dump', { tree: tree.index + 1, trees: trees.length, bytes, total: expected });
    }
    const dumpMs = Date.now() - frozenAt;
    // Every tree directory with pre-dumps, used or not: the published image holds no symlink (./pre-dump.ts).
    if (preDumps > 0)
      for (let k = 0; existsSync(join(partialDir, `tree-${k}`)); k++) dropParentLinks(join(partialDir, `tree-${k}`), preDumps);
    const followed = follower.stop();
    const hashedDuringDump = hashed;
    liftHold();

    progress('verify');
    checkNothingMissing(lease, trees, name);
    const consistency = await hold.end();
    if (!consistency.consistent) {
      const seen = consistency.breaches.map((b) => `${b.observed} at ${b.at}`).join(', ');
      throw new AgentError(
        'EINCONSISTENT',
        `checkpoint of ${name} is inconsistent: the cgroup did not stay FROZEN (${seen}); its image is not kept as good`,
      );
    }

    // Early: the policies that let the workload run again (see the head of this file).
    const thawFirst = after === 'thawed' || (after === 'prior' && prior === 'THAWED');
    let finalState: FreezerState | 'EMPTY' | undefined;
    let thawedAt: number | undefined;
    if (thawFirst) {
      ({ finalState, thawedAt } = await policyStep(lease, after, prior, partialDir, progress));
      thawed = true;
    }

    // After the thaw (for the policies that let the workload run): reading the pre-dumps' stats
    // need not keep it stopped.
    const warnings = preDumps > 0 ? await preDumpWarnings(partialDir, trees, stats) : [];
    const imageBytes = treeBytes(partialDir);
    progress('manifest', { message: 'checksums', bytes: hashed, total: imageBytes });
    const hashStart = Date.now();
    const files = await describeFiles(partialDir, {
      skip: [MANIFEST_FILE],
      followed,
      onBytes: (n) => {
        hashed += n;
        byteProgress('manifest', { message: 'checksums', bytes: Math.min(hashed, imageBytes), total: imageBytes });
      },
    });
    const hashMs = Date.now() - hashStart;
    const manifest: Manifest = {
      formatVersion: 1,
      id,
      cgroup: ref.path,
      hierarchy: ref.hierarchy,
      cgroupDir: ref.dir,
      createdAt: new Date(frozenAt).toISOString(),
      kernel: kernelRelease(),
      criuVersion: ctx.criu.version,
      host,
      options: {
        after,
        shellJob: !!options.shellJob,
        tcpEstablished: !!options.tcpEstablished,
        fileLocks: !!options.fileLocks,
        ...(preDumps > 0 ? { preDumps } : {}),
        timeoutMs: deadline.timeoutMs,
      },
      priorState: prior,
      trees,
      subCgroups: subs,
      files,
      criuStats: stats,
      timings: {
        freezeMs: frozenAt - freezeStart,
        frozenWindowMs: (thawedAt ?? Date.now()) - frozenAt,
        dumpMs,
        hashMs,
        hashedDuringDumpBytes: hashedDuringDump,
        publishMs: 0,
        totalMs: Date.now() - startedAt,
      },
    };
    const publishStart = Date.now();
    writeFileDurably(join(partialDir, MANIFEST_FILE), JSON.stringify(manifest, null, 2) + '\n');
    fsyncDirectory(partialDir);
    const dir = ctx.store.publish(partialDir, id);
    partialDir = undefined;
    const publishedAt = Date.now();
    let timings: Timings = { ...manifest.timings, publishMs: publishedAt - publishStart, totalMs: publishedAt - startedAt };

    if (!thawFirst) {
      ({ finalState, thawedAt } = await policyStep(lease, after, prior, dir, progress));
      timings = { ...timings, frozenWindowMs: thawedAt - frozenAt, totalMs: thawedAt - startedAt };
    }
    // The manifest was written before its own fsync and rename were timed (and, for these policies,
    // before the policy): its timings get their true values, replaced atomically so the published
    // image never lacks a manifest.
    replaceFileDurably(join(dir, MANIFEST_FILE), JSON.stringify({ ...manifest, timings }, null, 2) + '\n');
    progress('release');
    progress('done');
    return {
      id,
      dir,
      cgroup: ref.path,
      hierarchy: ref.hierarchy,
      createdAt: manifest.createdAt,
      trees: trees.length,
      processes: trees.reduce((sum, t) => sum + t.processes.length, 0),
      bytes: files.reduce((sum, f) => sum + f.size, 0),
      after,
      finalState: finalState!,
      timings,
      ...(warnings.length > 0 ? { warnings } : {}),
    };
  } catch (caught) {
    let err = caught;
    follower?.stop();
    liftHold?.();
    const consistency = await hold?.end().catch(() => undefined);
    // A CRIU that failed on its own (no signal) puts the freezer back as it found it, and agentd had
    // it FROZEN: found otherwise, someone thawed the cgroup during the checkpoint, and that is what
    // the failure is (CRIU then times out seizing running tasks, "Unseizable non-zombie", measured in
    // a loaded guest with CRIU 3.17.1). Said as EINCONSISTENT, CRIU's own error quoted.
    if (
      consistency &&
      !consistency.consistent &&
      isAgentError(err, 'ECRIU') &&
      typeof err.details?.exitCode === 'number' &&
      !err.details?.signal
    ) {
      const seen = consistency.breaches.map((b) => `${b.observed} at ${b.at}`).join(', ');
      err = new AgentError(
        'EINCONSISTENT',
        `checkpoint of ${name} is inconsistent: the cgroup did not stay FROZEN (${seen}), and CRIU then failed: ${err.message}`,
        { cause: caught, details: err.details },
      );
    }
    const failedDir = partialDir ? ctx.store.discard(partialDir, id, keepFailed) : undefined;
    // A CRIU killed from outside may have left a task at the trap it planted, doomed to die of
    // SIGTRAP as soon as it runs (docs/criu-faults.md). Let such tasks run and end now, so that the
    // error names them and a FROZEN prior state does not keep one that dies at the next thaw.
    if (isAgentError(err) && err.details?.signal && !thawed) await settleDoomed(lease, trees);
    // After the thaw the workload runs on: freezing it again for a failed image would only stop it.
    if (prior !== undefined && !thawed) await returnToPrior(lease.freezer, prior);
    // Once thawed, a process may end on its own: that is the workload's business, not a loss.
    const lost = thawed ? [] : lostProcesses(trees);
    const survivors = trees.reduce((sum, t) => sum + t.processes.length, 0) - lost.length;
    const failure = annotateFailure(
      err,
      name,
      failedDir,
      lost.length ? { text: describeLost(lost, survivors, prior ?? 'THAWED'), processes: lost } : undefined,
    );
    if (failedDir)
      recordFailure(failedDir, {
        id,
        cgroup: ref.path,
        hierarchy: ref.hierarchy,
        startedAt: new Date(startedAt).toISOString(),
        error: failure,
        lost,
      });
    throw failure;
  } finally {
    lease.release();
  }
}

/** A warning for each tree whose pre-dumps saved little: its first pre-dump's pages against its final dump's (CRIU's stats). */
async function preDumpWarnings(partialDir: string, trees: readonly TreeRecord[], stats: readonly DumpStats[]): Promise<string[]> {
  const warnings: string[] = [];
  for (const [position, tree] of trees.entries()) {
    if (!tree.preDumps) continue;
    const first = await readDumpStats(join(partialDir, `tree-${tree.index}`, preDumpDir(1))).catch(() => undefined);
    const warning = first && littleSavedWarning(tree.index, first.pagesWritten, stats[position].pagesWritten);
    if (warning) warnings.push(warning);
  }
  return warnings;
}

// How long tasks left at CRIU's trap get to end once thawed: they die at their next instruction.
const DOOMED_SETTLE_MS = 5_000;
// How long a task of the frozen cgroup may read "running" before it is taken as clear of the trap.
const SETTLE_RUNNING_MS = 2_000;

async function settleDoomed(lease: CgroupLease, trees: readonly TreeRecord[]): Promise<void> {
  const pids = trees.flatMap((t) => t.processes.map((p) => p.pid));
  const pause = () => new Promise((resolve) => setTimeout(resolve, 5));
  // Frozen first: CRIU thaws the cgroup to seize it, and a task its death let go that the scheduler
  // has not run yet reads "running" in /proc/PID/syscall, which hides where it stands; frozen, each
  // task shows its pc. (At load 20 a doomed task was missed that way, and died after the answer.)
  // A frozen v2 cgroup counts a task that CRIU's death just let out of its ptrace stop as frozen
  // before the task has run again: it reads "running" until it reaches the freezer (or CRIU's trap,
  // and dies of it). So wait until no task reads "running". Missed once in 30 fault-suite runs: the
  // task died 3 ms after the error had counted every process alive.
  await lease.freezer.freeze().catch(() => undefined);
  let states = pids.map(trapState);
  // A task already exiting (a doomed one dumping its core) is waited for as well: it is lost once it is a zombie.
  const unsettled = () => states.includes('running') || states.includes('exiting');
  for (const until = Date.now() + SETTLE_RUNNING_MS; unsettled() && Date.now() < until; states = pids.map(trapState)) {
    await pause();
  }
  if (!states.includes('trap')) return;
  await lease.freezer.thaw().catch(() => undefined);
  const until = Date.now() + DOOMED_SETTLE_MS;
  // Until each has died (or left the trap): one on its way out is not gone until it is a zombie.
  const dying = (pid: number) => ['trap', 'exiting'].includes(trapState(pid));
  while (pids.some(dying) && Date.now() < until) await pause();
}

/** The --after policy, announced and recorded in the lock (recovery completes it if the agent dies). */
async function policyStep(
  lease: CgroupLease,
  after: AfterPolicy,
  prior: 'THAWED' | 'FROZEN',
  imageDir: string,
  progress: (stage: Stage, extra?: Record<string, unknown>) => void,
): Promise<{ finalState: FreezerState | 'EMPTY'; thawedAt: number }> {
  progress('policy', { message: `after: ${after}` });
  lease.update({ phase: `after-${after}`, imageDir });
  const finalState = await applyAfterPolicy(lease.freezer, after, prior);
  return { finalState, thawedAt: Date.now() };
}

/**
 * Writes failure.json beside CRIU's logs in a failed attempt's directory: what was attempted, when,
 * the error, and any process that did not survive. Best effort: the error itself is what matters.
 */
function recordFailure(
  failedDir: string,
  record: { id: string; cgroup: string; hierarchy: string; startedAt: string; error: AgentError; lost: readonly LostProcess[] },
): void {
  try {
    const { error, ...rest } = record;
    const body = {
      formatVersion: 1,
      ...rest,
      failedAt: new Date().toISOString(),
      bytes: treeBytes(failedDir),
      error: { code: error.code, message: error.message },
    };
    writeFileDurably(join(failedDir, FAILURE_FILE), JSON.stringify(body, null, 2) + '\n');
  } catch {
    // a full disk is a likely reason to be here; the reply still carries the error
  }
}

function annotateFailure(
  err: unknown,
  name: string,
  failedDir: string | undefined,
  lost?: { text: string; processes: readonly LostProcess[] },
): AgentError {
  const base = isAgentError(err) ? err : new AgentError('EIO', `checkpoint of ${name} failed: ${String(err)}`, { cause: err });
  if (!failedDir && !lost) return base;
  const signal = base.details?.signal;
  const how = lost && signal ? `CRIU was killed by ${String(signal)} from outside agentd while it held them (docs/criu-faults.md); ` : '';
  const message = [base.message, lost ? `${how}${lost.text}` : undefined, failedDir ? `CRIU logs kept in ${failedDir}` : undefined]
    .filter(Boolean)
    .join('; ');
  return new AgentError(base.code, message, {
    cause: base.cause ?? base,
    details: { ...base.details, ...(failedDir ? { failedDir } : {}), ...(lost ? { lost: lost.processes } : {}) },
  });
}
