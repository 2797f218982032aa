// Waking a caller whenever a cgroup's freezer state may have changed (the lock's watch during a
// checkpoint, docs/lock.md). The drivers decide how: v2 has a notification, v1 has none.
//
// v2: cgroup.events raises an inotify event on every change of `frozen`, so fs.watch wakes us at
// once; a re-read every 20 ms backs it up because the kernel rate-limits those events (~16 ms) and
// inotify can lag under load. v1: freezer.state is polled every 5 ms, a single pread on a kept-open
// fd (a few µs), which costs nothing measurable while the tasks are frozen anyway. A thaw-and-refreeze
// shorter than that interval (v1) or than the event delivery (v2) can go unseen.

import { watch, type FSWatcher } from 'node:fs';
import type { StateWatch } from './types.js';

export const V1_POLL_MS = 5;
export const V2_REREAD_MS = 20;

/** Calls onChange every intervalMs, and at once on each inotify event of any of eventsFiles. */
export function watchState(onChange: () => void, intervalMs: number, ...eventsFiles: string[]): StateWatch {
  const watchers: FSWatcher[] = [];
  for (const eventsFile of eventsFiles) {
    try {
      const watcher = watch(eventsFile, { persistent: false }, onChange);
      // The cgroup vanishing makes the watch fail: the next read of the state reports that itself.
      watcher.on('error', onChange);
      watchers.push(watcher);
    } catch {
      // no inotify left, or the cgroup is gone: the periodic re-read still sees every lasting change
    }
  }
  let timer: NodeJS.Timeout | undefined = setInterval(onChange, intervalMs);
  timer.unref();
  return {
    close() {
      if (timer) clearInterval(timer);
      for (const watcher of watchers.splice(0)) watcher.close();
      timer = undefined;
    },
  };
}
