// Waiting without hogging the CPU that the tasks need in order to freeze or exit: on a 2-core host a
// tight reader slowed a 1-task v1 freeze from 0.04 ms to 2.9 ms, while a 10 ms sleep adds up to 10 ms
// whenever the first read is not final (docs/freezer.md). So: yield a few times, then back off to ~1 ms.

import { setImmediate as yieldToLoop, setTimeout as sleep } from 'node:timers/promises';
import { existsSync } from 'node:fs';

export { sleep };

const YIELDS_BEFORE_SLEEPING = 4;
const MAX_BACKOFF_MS = 1;

export async function backoff(attempt: number): Promise<void> {
  if (attempt < YIELDS_BEFORE_SLEEPING) {
    await yieldToLoop();
    return;
  }
  await sleep(Math.min(MAX_BACKOFF_MS, 0.1 * 2 ** (attempt - YIELDS_BEFORE_SLEEPING)));
}

/** Resolves true once none of the pids has a /proc entry (zombies reaped), false at the deadline. */
export async function waitForPidsGone(pids: readonly number[], deadline: number): Promise<boolean> {
  let remaining = pids.slice();
  for (let attempt = 0; ; attempt++) {
    remaining = remaining.filter((pid) => existsSync(`/proc/${pid}`));
    if (remaining.length === 0) return true;
    if (Date.now() >= deadline) return false;
    await backoff(attempt);
  }
}
