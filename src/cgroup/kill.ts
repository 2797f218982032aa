// Emptying a cgroup and its subtree, for both drivers' killAll(): each says how one round of kills
// is done (v1 kill-then-thaw, v2 cgroup.kill or SIGKILL), this repeats rounds until nothing is left.

import { existsSync } from 'node:fs';
import { AgentError } from '../errors/index.js';
import { subtreePids } from './ancestry.js';
import { backoff, waitForPidsGone } from './timing.js';
import { DEFAULT_FREEZE_TIMEOUT_MS, type CgroupRef, type Freezer } from './types.js';

/**
 * Repeats `killOnce` over the processes of the cgroup and its descendants until none is left (tasks
 * forked meanwhile are caught by the next round), then waits until every killed pid is gone from /proc.
 */
export async function killSubtree(
  cgroup: CgroupRef,
  name: string,
  killOnce: (pids: number[]) => void,
  timeoutMs: number = DEFAULT_FREEZE_TIMEOUT_MS,
): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  const killed = new Set<number>();
  for (let attempt = 0; ; attempt++) {
    let pids: number[];
    try {
      pids = subtreePids(cgroup.dir, name);
    } catch (err) {
      // Emptied by an earlier round and removed at once by whoever made it (systemd removes a
      // service's cgroup when its main process dies, docs/daemon-and-cli.md): nothing is left.
      if (killed.size > 0 && !existsSync(cgroup.dir)) break;
      throw err;
    }
    if (pids.length === 0) break;
    pids.forEach((pid) => killed.add(pid));
    killOnce(pids);
    if (Date.now() >= deadline) {
      throw new AgentError('ETIMEDOUT', `cgroup ${name}: processes ${pids.join(', ')} survived SIGKILL`);
    }
    await backoff(attempt);
  }
  if (!(await waitForPidsGone([...killed], deadline))) {
    throw new AgentError('ETIMEDOUT', `cgroup ${name}: killed processes were not reaped in time`);
  }
}

/** SIGKILL to each pid; one already gone is fine. */
export function sigkill(pids: readonly number[]): void {
  for (const pid of pids) {
    try {
      process.kill(pid, 'SIGKILL');
    } catch {
      // Already gone.
    }
  }
}

/**
 * Kills the listed processes of a cgroup's subtree (not the rest of it) and waits until they are
 * gone; true if they are. A frozen cgroup is thawed after the kills: a v1-frozen task takes its
 * SIGKILL only once thawed, and whoever calls this undoes an operation that froze the cgroup itself.
 */
export async function killListed(
  freezer: Freezer,
  pids: readonly number[],
  timeoutMs: number = DEFAULT_FREEZE_TIMEOUT_MS,
): Promise<boolean> {
  const deadline = Date.now() + timeoutMs;
  sigkill(pids);
  if (freezer.state() !== 'THAWED') await freezer.thaw();
  return waitForPidsGone([...pids], deadline);
}
