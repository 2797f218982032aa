// The checkpoint service the daemon (and agentctl in direct mode) calls: checkpoints, restores,
// the image store, recovery after a crash, and the CRIU it runs.

import { assertCriuWorks, checkLogLevel, findCriu, type CriuInfo } from '../criu/index.js';
import { DEFAULT_IMAGES_DIR } from '../defaults/index.js';
import type { CgroupRef } from '../cgroup/index.js';
import type { CgroupControl } from '../lock/index.js';
import { randomBytes } from 'node:crypto';
import { isAgentError } from '../errors/index.js';
import { byCreation, checkId, type ImageStore } from './image-store.js';
import { verifyFiles } from './checksums.js';
import { claimCheckpoint, refuseIfInUse } from './in-use.js';
import { ImageRoots } from './allowed-roots.js';
import { runCheckpoint } from './dump-flow.js';
import { runRestore, type RestoreHooks } from './restore-flow.js';
import { recover } from './recovery.js';
import type {
  CheckpointListing,
  CheckpointOptions,
  CheckpointSummary,
  FailureRecord,
  Manifest,
  OperationHooks,
  PruneOptions,
  PruneResult,
  RecoveryReport,
  RestoreOptions,
  RestoreSummary,
} from './types.js';

export interface CheckpointerOptions {
  readonly control: CgroupControl;
  readonly imagesDir?: string;
  /** More directories a checkpoint request may name as its `imagesDir` (the agent's own always may). */
  readonly allowedImagesDirs?: readonly string[];
  /** The criu binary; default: found on PATH and in the sbin directories. */
  readonly criuPath?: string;
  /**
   * How a dump's CRIU is started (CriuRunOptions.wrap). The daemon under systemd passes one that
   * runs it in a transient scope, out of agentd.service's cgroup: systemd kills that cgroup
   * whole (`systemctl kill`, the end of a stop, a watchdog kill), and CRIU killed while it holds
   * its tasks can kill them (docs/criu-faults.md).
   */
  readonly wrapDump?: (argv: readonly string[]) => readonly string[];
  /** CRIU's -v level for dumps and pre-dumps; default 3 (src/criu/dump.ts, DUMP_LOG_LEVEL). */
  readonly criuLogLevel?: number;
  /** Restored processes become a systemd scope unless a restore says otherwise (src/systemd/restore-scope.ts). */
  readonly restoreScopes?: boolean;
}

export class Checkpointer {
  readonly control: CgroupControl;
  private readonly roots: ImageRoots;
  private readonly criuPath?: string;
  private readonly wrapDump?: (argv: readonly string[]) => readonly string[];
  private readonly criuLogLevel?: number;
  private readonly restoreScopes?: boolean;
  private found: Promise<CriuInfo> | undefined;

  constructor(options: CheckpointerOptions) {
    this.control = options.control;
    this.roots = new ImageRoots(options.imagesDir ?? DEFAULT_IMAGES_DIR, options.allowedImagesDirs);
    this.criuPath = options.criuPath;
    this.wrapDump = options.wrapDump;
    this.restoreScopes = options.restoreScopes;
    this.criuLogLevel = options.criuLogLevel === undefined ? undefined : checkLogLevel(options.criuLogLevel);
  }

  /**
   * The CRIU in use as found (`criu --version`, `criu check`, its self-test record): the one probe of
   * the agent, which the daemon's start and `GET /v1/host` ask too. A CRIU that passes its check is
   * kept; any other answer is not, so installing or repairing CRIU while the agent runs is picked up
   * by the next caller. ECRIU when there is no runnable criu; a failed check is in `check`.
   */
  findCriu(): Promise<CriuInfo> {
    if (!this.found) {
      const found = findCriu(this.criuPath);
      this.found = found;
      const forget = () => {
        if (this.found === found) this.found = undefined;
      };
      found.then((info) => info.check.ok || forget(), forget);
    }
    return this.found;
  }

  /** The CRIU a checkpoint or restore runs: findCriu(), and ECRIU naming what to install unless it works. */
  async criu(): Promise<CriuInfo> {
    return assertCriuWorks(await this.findCriu());
  }

  /** Every directory a checkpoint may be written to: the agent's own first, then the allowed ones. */
  get imageRoots(): readonly string[] {
    return this.roots.paths;
  }

  /**
   * Refuses (EACCES) an `imagesDir` that is not one of the image roots. checkpoint() checks it
   * first too; this lets a caller refuse the request before it starts anything (a progress stream).
   */
  checkImagesDir(imagesDir: string | undefined): void {
    if (imagesDir !== undefined) this.roots.named(imagesDir);
  }

  async checkpoint(ref: CgroupRef, options: CheckpointOptions = {}, hooks: OperationHooks = {}): Promise<CheckpointSummary> {
    const store = options.imagesDir === undefined ? this.roots.own : this.roots.named(options.imagesDir);
    const criu = await this.criu();
    return runCheckpoint(
      { control: this.control, store, criu, wrapDump: this.wrapDump, criuLogLevel: this.criuLogLevel },
      ref,
      options,
      hooks,
    );
  }

  /**
   * Restores a checkpoint. While it runs the checkpoint is in use: a delete or a second restore of
   * it gets EBUSY naming this one (src/checkpoint/in-use.ts).
   */
  async restore(id: string, options: RestoreOptions = {}, hooks: RestoreHooks = {}): Promise<RestoreSummary> {
    const store = this.roots.holding(checkId(id));
    const requestId = options.requestId ?? randomBytes(4).toString('hex');
    const release = claimCheckpoint(store.finalDir(id), id, 'restore', requestId);
    try {
      const criu = await this.criu();
      return await runRestore(
        { control: this.control, store, criu, restoreScopes: this.restoreScopes },
        id,
        { ...options, requestId },
        hooks,
      );
    } finally {
      release();
    }
  }

  /** EBUSY naming the operation when checkpoint `id` is in use (a restore of it runs); ENOENT when there is none. */
  refuseIfInUse(id: string): void {
    refuseIfInUse(this.roots.holding(checkId(id)).finalDir(id));
  }

  // Every use of a root checks it first (ensureRoot): images are never listed, shown or restored
  // (as root) from a directory others could have written to, where anyone could plant one.

  list(): CheckpointListing[] {
    return this.roots
      .present()
      .flatMap((store) => store.list())
      .sort(byCreation);
  }

  show(id: string): Manifest {
    return this.roots.holding(checkId(id)).readManifest(id);
  }

  /** A good checkpoint's manifest, or what a failed attempt recorded (its `status` is `failed`). */
  describe(id: string): Manifest | FailureRecord {
    const store = this.roots.holding(checkId(id));
    return store.hasFailed(id) && !store.hasGood(id) ? store.readFailure(id) : store.readManifest(id);
  }

  /**
   * Removes the checkpoints that match (failed ones only with `failed`; those created at least
   * `olderThanMs` ago with it; both when both are given), oldest first, except any an operation
   * uses right now (a restore), which are kept and named. A dry run removes nothing.
   */
  async prune(options: PruneOptions, now = Date.now()): Promise<PruneResult> {
    const matches = this.list().filter((c) => {
      if (options.failed && c.status !== 'failed') return false;
      if (options.olderThanMs !== undefined) {
        const at = c.createdAt === undefined ? NaN : Date.parse(c.createdAt);
        // No time at all (a directory named by hand): never old enough to be removed unasked.
        if (!Number.isFinite(at) || now - at < options.olderThanMs) return false;
      }
      return true;
    });
    const removed: CheckpointListing[] = [];
    const kept: { id: string; reason: string }[] = [];
    for (const c of matches) {
      try {
        // delete() refuses one in use too; a dry run asks the same question without deleting.
        if (options.dryRun) this.refuseIfInUse(c.id);
        else await this.delete(c.id);
      } catch (err) {
        if (isAgentError(err, 'ENOENT')) continue; // deleted meanwhile by someone else
        if (!isAgentError(err, 'EBUSY')) throw err;
        kept.push({ id: c.id, reason: err.message });
        continue;
      }
      removed.push(c);
    }
    return { dryRun: !!options.dryRun, removed, kept };
  }

  /**
   * Deletes a checkpoint (good or failed); EBUSY while an operation uses it. It leaves the listing
   * at once; the promise settles when its files are gone (removed off the event loop).
   */
  async delete(id: string): Promise<void> {
    const store = this.roots.holding(checkId(id));
    refuseIfInUse(store.finalDir(id));
    await store.delete(id);
  }

  /**
   * A good checkpoint, verified against its manifest (every file's size and sha256), claimed for an
   * export until `release` is called: a delete or restore of it meanwhile gets EBUSY.
   */
  async openForExport(id: string, requestId: string): Promise<{ dir: string; manifest: Manifest; release: () => void }> {
    const store = this.roots.holding(checkId(id));
    const manifest = store.readManifest(id);
    const dir = store.finalDir(id);
    const release = claimCheckpoint(dir, id, 'export', requestId);
    try {
      await verifyFiles(dir, manifest.files);
      return { dir, manifest, release };
    } catch (err) {
      release();
      throw err;
    }
  }

  /** The image root imported archives land in (the agent's own), checked and made if missing. */
  importRoot(): ImageStore {
    const store = this.roots.own;
    store.ensureRoot();
    return store;
  }

  /** For a freshly started agent: what a crashed one left, in every image root, put right. */
  recover(): Promise<RecoveryReport> {
    return recover(this.control, this.roots.stores);
  }
}
