// Restoring a checkpoint: verify every image file against the manifest first, wait until the saved
// pids are free, then restore the process trees one by one in their saved order (src/restart), into
// the original cgroup or another one. A failure part-way kills what was already restored.

import { existsSync, mkdirSync, mkdtempSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { randomBytes } from 'node:crypto';
import { backoff, discoverMounts, resolveCgroup, waitForPidsGone, type CgroupRef, type Freezer, type Hierarchy } from '../cgroup/index.js';
import type { CgroupControl } from '../lock/index.js';
import { runCriuRestore, startCriuRestoreOnTerminal, type CriuCgroupRoot, type CriuInfo } from '../criu/index.js';
import { restoreInOrder } from '../restart/index.js';
import { AgentError } from '../errors/index.js';
import { readProcStat } from '../proc/index.js';
import { ImageStore, verifyFiles } from './image-store.js';
import type { Manifest, OperationHooks, RestoreOptions, RestoreSummary, TreeRecord } from './types.js';

const DEFAULT_TIMEOUT_MS = 5 * 60_000;
// The saved pids linger as zombies briefly after the originals are killed (docs/criu.md): wait this long.
const PIDS_FREE_WAIT_MS = 10_000;

/** A pty a --shell-job tree was restored onto; the caller owns it (its output, its input). */
export interface RestoredTerminal {
  readonly tree: number;
  readonly pid: number;
  readonly write: (data: string) => void;
  readonly onData: (listener: (data: string) => void) => { dispose(): void };
  readonly exited: Promise<{ exitCode: number; signal?: number }>;
}

export interface RestoreHooks extends OperationHooks {
  readonly onTerminal?: (terminal: RestoredTerminal) => void;
}

export interface RestoreContext {
  readonly control: CgroupControl;
  readonly store: ImageStore;
  readonly criu: CriuInfo;
}

function mountOf(hierarchy: Hierarchy): string {
  const mounts = discoverMounts();
  const root = hierarchy === 'v1' ? mounts.v1Freezer : mounts.v2;
  if (!root) throw new AgentError('ENOENT', `this host has no cgroup ${hierarchy} freezer hierarchy, which the checkpoint needs`);
  return root;
}

/** The target cgroup, created when missing (CRIU then uses it as it is, running). */
function targetCgroup(manifest: Manifest, options: RestoreOptions): CgroupRef {
  const hierarchy = options.hierarchy ?? manifest.hierarchy;
  if (hierarchy !== manifest.hierarchy) {
    throw new AgentError('EINVAL', `checkpoint ${manifest.id} was taken in the ${manifest.hierarchy} hierarchy; it cannot be restored into ${hierarchy}`);
  }
  const wanted = options.cgroup ?? manifest.cgroup;
  try {
    return resolveCgroup(wanted, { hierarchy });
  } catch (err) {
    if (!(err instanceof AgentError) || err.code !== 'ENOENT') throw err;
  }
  // resolveCgroup has already refused '..', NUL and the root; a relative path is created under the mount.
  const root = mountOf(hierarchy);
  const relative = wanted.startsWith(root + '/') ? wanted.slice(root.length + 1) : wanted.replace(/^\/+/, '');
  mkdirSync(join(root, relative), { recursive: true });
  return resolveCgroup(relative, { hierarchy });
}

async function waitForSavedPids(trees: readonly TreeRecord[], deadlineMs: number): Promise<void> {
  const pids = trees.flatMap((t) => t.processes.map((p) => p.pid));
  if (await waitForPidsGone(pids, Date.now() + deadlineMs)) return;
  const busy = pids.filter((pid) => existsSync(`/proc/${pid}`));
  throw new AgentError(
    'EBUSY',
    `pids ${busy.join(', ')} of the checkpoint are in use by running processes; CRIU restores the same pids, so stop those processes first (or checkpoint with --after killed)`,
  );
}

function killTree(tree: TreeRecord): Promise<boolean> {
  for (const { pid } of tree.processes) {
    try {
      process.kill(pid, 'SIGKILL');
    } catch {
      // not restored, or gone
    }
  }
  return waitForPidsGone(tree.processes.map((p) => p.pid), Date.now() + PIDS_FREE_WAIT_MS);
}

function isStopped(pid: number): boolean {
  return readProcStat(pid)?.state === 'T';
}

async function waitUntilStopped(tree: TreeRecord, timeoutMs: number): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (let attempt = 0; !tree.processes.every((p) => isStopped(p.pid)); attempt++) {
    if (Date.now() > deadline) throw new AgentError('ETIMEDOUT', `restored tree ${tree.index} (root ${tree.root}) never reached its stopped state`);
    await backoff(attempt);
  }
}

/**
 * Every tree was restored stopped (--leave-stopped), so none ran before all were back and a failed
 * later tree could be undone before an earlier one did anything. Freezing around the SIGCONTs
 * starts them all at one instant rather than one by one.
 */
async function startTogether(freezer: Freezer, pids: readonly number[]): Promise<void> {
  await freezer.freeze();
  for (const pid of pids) {
    try {
      process.kill(pid, 'SIGCONT');
    } catch {
      // exited already
    }
  }
  await freezer.thaw();
}

export async function runRestore(ctx: RestoreContext, id: string, options: RestoreOptions, hooks: RestoreHooks = {}): Promise<RestoreSummary> {
  const started = Date.now();
  const progress = hooks.onProgress ?? (() => undefined);
  const manifest = ctx.store.readManifest(id);
  const dir = ctx.store.finalDir(id);
  progress({ stage: 'verify', message: `checking ${manifest.files.length} image files` });
  await verifyFiles(dir, manifest.files);

  const target = targetCgroup(manifest, options);
  const name = `${target.hierarchy}:${target.path}`;
  const lease = ctx.control.lease(target, { requestId: options.requestId ?? randomBytes(4).toString('hex'), operation: 'restore' });
  const workDir = mkdtempSync(join(ctx.control.runDir, `restore-${id}-`));
  // A --shell-job restore keeps CRIU in the foreground on the new pty, with its cgroup yard mounted
  // in the work dir, until the restored root exits: the work dir goes when the last such CRIU does.
  const foregroundCriu: Promise<unknown>[] = [];
  try {
    if (lease.freezer.state() !== 'THAWED') {
      throw new AgentError('EBUSY', `cgroup ${name} is ${lease.freezer.state()}: CRIU cannot restore into a frozen cgroup; thaw it first`);
    }
    await waitForSavedPids(manifest.trees, PIDS_FREE_WAIT_MS);
    const cgroupRoots: CriuCgroupRoot[] =
      target.path === manifest.cgroup ? [] : [{ controller: target.hierarchy === 'v1' ? 'freezer' : '', path: `/${target.path}` }];
    const timeoutMs = options.timeoutMs ?? DEFAULT_TIMEOUT_MS;
    const shellJob = !!manifest.options.shellJob;
    await restoreInOrder(
      manifest.trees.map((tree) => ({
        id: `tree-${tree.index}`,
        restore: async (signal: AbortSignal) => {
          progress({ stage: 'restore', tree: tree.index + 1, trees: manifest.trees.length });
          const treeWork = join(workDir, `tree-${tree.index}`);
          mkdirSync(treeWork);
          const common = {
            criuPath: ctx.criu.path,
            leaveStopped: true,
            imagesDir: join(dir, `tree-${tree.index}`),
            workDir: treeWork,
            tcpEstablished: !!manifest.options.tcpEstablished,
            networkLock: ctx.criu.networkLock,
            fileLocks: !!manifest.options.fileLocks,
            cgroupRoots,
            timeoutMs,
            signal,
          };
          if (!shellJob) return runCriuRestore(common);
          const restored = await startCriuRestoreOnTerminal(common);
          foregroundCriu.push(restored.exited);
          // A foreground CRIU writes its pidfile before it stops the tree: a SIGCONT sent before
          // that stop would be lost and leave the tree stopped for good.
          await waitUntilStopped(tree, timeoutMs);
          hooks.onTerminal?.({
            tree: tree.index,
            pid: restored.pid,
            write: (data) => restored.terminal.write(data),
            onData: (listener) => restored.terminal.onData(listener),
            exited: restored.exited,
          });
          return restored;
        },
        undo: () => killTree(tree),
      })),
      { signal: hooks.signal, timeoutMs },
    );
    const pids = manifest.trees.flatMap((t) => t.processes.map((p) => p.pid));
    const inCgroup = new Set(lease.freezer.processes());
    const astray = pids.filter((pid) => !inCgroup.has(pid));
    if (astray.length > 0) {
      await Promise.all(manifest.trees.map(killTree));
      throw new AgentError('ECRIU', `restore of ${id}: processes ${astray.join(', ')} did not come back in cgroup ${name}; killed what was restored`);
    }
    await startTogether(lease.freezer, pids);
    progress({ stage: 'done' });
    return { id, cgroup: target.path, hierarchy: target.hierarchy, pids, trees: manifest.trees.length, durationMs: Date.now() - started };
  } finally {
    lease.release();
    const removeWorkDir = () => rmSync(workDir, { recursive: true, force: true });
    void Promise.all(foregroundCriu).then(removeWorkDir).catch(() => undefined);
  }
}
