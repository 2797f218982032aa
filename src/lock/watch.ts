// Watching a CHECKPOINTING cgroup for any moment it is not FROZEN (docs/freezer.md, rule 5;
// docs/lock.md, the watch).
//
// v2: cgroup.events raises an inotify event on every change of `frozen`, so fs.watch wakes us at
// once; a re-read every 20 ms backs it up because the kernel rate-limits those events (~16 ms) and
// inotify can lag under load. v1 offers no notification: freezer.state is polled every 5 ms, a
// single pread on a kept-open fd (a few µs), which costs nothing measurable while the tasks are
// frozen anyway. A thaw-and-refreeze shorter than that interval (v1) or than the event delivery
// (v2) can go unseen; end() still checks the state itself.
//
// Only observations count: a late event for the freeze that preceded the checkpoint reads FROZEN
// and is no breach. A cgroup with no processes is no breach either, whatever its state: nothing in
// it can run (CRIU's default mode kills the tasks and leaves the cgroup THAWED and empty).

import { watch, type FSWatcher } from 'node:fs';
import { join } from 'node:path';
import type { Freezer, FreezerState } from '../cgroup/index.js';
import type { Breach } from './types.js';

const V1_POLL_MS = 5;
const V2_REREAD_MS = 20;
// A cgroup flapping for hours must not grow memory without bound; the first breaches tell the story.
const MAX_BREACHES = 100;

export class FreezerWatch {
  readonly breaches: Breach[] = [];
  /** The first error reading the cgroup (it was removed, say); end() reports it by reading again. */
  error: unknown;
  private paused = 0;
  private stopped = false;
  private lastBreachState: FreezerState | undefined;
  private timer: NodeJS.Timeout | undefined;
  private watcher: FSWatcher | undefined;

  constructor(private readonly freezer: Freezer) {}

  /** Starts watching. Call before reading the state that justifies the checkpoint, so nothing falls in between. */
  start(): void {
    const { hierarchy, dir } = this.freezer.cgroup;
    if (hierarchy === 'v2') {
      try {
        this.watcher = watch(join(dir, 'cgroup.events'), { persistent: false }, () => this.observe());
        this.watcher.on('error', (err) => {
          this.error ??= err;
        });
      } catch {
        this.watcher = undefined; // no inotify left: the periodic re-read still sees every lasting change
      }
    }
    this.timer = setInterval(() => this.observe(), hierarchy === 'v1' ? V1_POLL_MS : V2_REREAD_MS);
    this.timer.unref();
  }

  /** CRIU's own window: its freezer writes are not breaches. Windows may nest. */
  pause(): void {
    this.paused++;
  }

  resume(): void {
    this.paused = Math.max(0, this.paused - 1);
    this.lastBreachState = undefined;
  }

  stop(): void {
    this.stopped = true;
    if (this.timer) clearInterval(this.timer);
    this.watcher?.close();
    this.timer = undefined;
    this.watcher = undefined;
  }

  /** Reads the state now and records a breach when it is not FROZEN (once per change of state). */
  observe(): void {
    if (this.stopped || this.paused > 0) return;
    try {
      const state = this.freezer.state();
      if (state === 'FROZEN') {
        this.lastBreachState = undefined;
        return;
      }
      if (state === this.lastBreachState) return;
      if (this.freezer.processes().length === 0) return;
      this.lastBreachState = state;
      this.record(state);
    } catch (err) {
      this.error ??= err;
    }
  }

  record(observed: FreezerState): void {
    if (this.breaches.length < MAX_BREACHES) this.breaches.push({ at: new Date().toISOString(), observed });
  }
}
