// Watching a CHECKPOINTING cgroup for any moment it is not FROZEN (docs/freezer.md, rule 5;
// docs/lock.md, the watch).
//
// The freezer driver wakes us whenever the state may have changed (Freezer.watch: an inotify event
// on v2, a 5 ms poll on v1); each wake-up reads the state. end() still checks the state itself,
// since a thaw-and-refreeze shorter than a wake-up can go unseen.
//
// Only observations count: a late event for the freeze that preceded the checkpoint reads FROZEN
// and is no breach. A cgroup with no processes is no breach either, whatever its state: nothing in
// it can run (CRIU's default mode kills the tasks and leaves the cgroup THAWED and empty).

import type { Freezer, FreezerState, StateWatch } from '../cgroup/index.js';
import type { Breach } from './types.js';

// A cgroup flapping for hours must not grow memory without bound; the first breaches tell the story.
const MAX_BREACHES = 100;

export class FreezerWatch {
  readonly breaches: Breach[] = [];
  private paused = 0;
  private stopped = false;
  private lastBreachState: FreezerState | undefined;
  private watch: StateWatch | undefined;

  constructor(private readonly freezer: Freezer) {}

  /** Starts watching. Call before reading the state that justifies the checkpoint, so nothing falls in between. */
  start(): void {
    this.watch = this.freezer.watch(() => this.observe());
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
    this.watch?.close();
    this.watch = undefined;
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
      if (this.freezer.subtreeProcesses().length === 0) return;
      this.lastBreachState = state;
      this.record(state);
    } catch {
      // The cgroup was removed, say: end() reads the state again and reports that itself.
    }
  }

  private record(observed: FreezerState): void {
    if (this.breaches.length < MAX_BREACHES) this.breaches.push({ at: new Date().toISOString(), observed });
  }
}
