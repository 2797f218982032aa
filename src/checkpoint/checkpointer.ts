// The checkpoint service the daemon (and agentctl in direct mode) calls: checkpoints, restores,
// the image store, recovery after a crash, and the CRIU it runs.

import { requireWorkingCriu, type CriuInfo } from '../criu/index.js';
import type { CgroupRef } from '../cgroup/index.js';
import type { CgroupControl } from '../lock/index.js';
import { checkId, ImageStore } from './image-store.js';
import { runCheckpoint } from './dump-flow.js';
import { runRestore, type RestoreHooks } from './restore-flow.js';
import { recover } from './recovery.js';
import type {
  CheckpointListing,
  CheckpointOptions,
  CheckpointSummary,
  Manifest,
  OperationHooks,
  RecoveryReport,
  RestoreOptions,
  RestoreSummary,
} from './types.js';

export const DEFAULT_IMAGES_DIR = '/var/lib/agentd/checkpoints';

export interface CheckpointerOptions {
  readonly control: CgroupControl;
  readonly imagesDir?: string;
  /** The criu binary; default: found on PATH and in the sbin directories. */
  readonly criuPath?: string;
}

export class Checkpointer {
  readonly control: CgroupControl;
  readonly store: ImageStore;
  private readonly criuPath?: string;
  private criuInfo: Promise<CriuInfo> | undefined;

  constructor(options: CheckpointerOptions) {
    this.control = options.control;
    this.store = new ImageStore(options.imagesDir ?? DEFAULT_IMAGES_DIR);
    this.criuPath = options.criuPath;
  }

  /**
   * The CRIU in use, checked once (`criu --version`, `criu check`). A failed check is not cached, so
   * installing CRIU while the agent runs is picked up by the next request. ECRIU names what to install.
   */
  criu(): Promise<CriuInfo> {
    this.criuInfo ??= requireWorkingCriu(this.criuPath);
    this.criuInfo.catch(() => (this.criuInfo = undefined));
    return this.criuInfo;
  }

  async checkpoint(ref: CgroupRef, options: CheckpointOptions = {}, hooks: OperationHooks = {}): Promise<CheckpointSummary> {
    const criu = await this.criu();
    const store = options.imagesDir ? new ImageStore(options.imagesDir) : this.store;
    return runCheckpoint({ control: this.control, store, criu }, ref, options, hooks);
  }

  async restore(id: string, options: RestoreOptions = {}, hooks: RestoreHooks = {}): Promise<RestoreSummary> {
    checkId(id);
    this.store.ensureRoot();
    const criu = await this.criu();
    return runRestore({ control: this.control, store: this.store, criu }, id, options, hooks);
  }

  // Every use of the store checks its root first (ensureRoot): images are never listed, shown or
  // restored (as root) from a directory others could have written to, where anyone could plant one.

  list(): CheckpointListing[] {
    this.store.ensureRoot();
    return this.store.list();
  }

  show(id: string): Manifest {
    checkId(id);
    this.store.ensureRoot();
    return this.store.readManifest(id);
  }

  delete(id: string): void {
    checkId(id);
    this.store.ensureRoot();
    this.store.delete(id);
  }

  /** For a freshly started agent: what a crashed one left, put right. */
  recover(): Promise<RecoveryReport> {
    return recover(this.control, this.store);
  }
}
