// Who holds the pids a restore needs. CRIU gives every process its saved pid back, so a restore
// cannot start while any of them is taken. A live process keeps its pid for as long as it runs:
// the restore is refused at once, naming each holder (its command, and the cgroup it is in) so the
// operator knows what to stop. A zombie has exited and keeps its pid only until its parent reaps
// it, usually a moment later (the originals just killed, say): that alone is worth waiting for,
// and the wait is said on the progress stream, naming the parent that has yet to reap.

import { readFileSync } from 'node:fs';
import { backoff, cgroupOfProcess, type Hierarchy } from '../cgroup/index.js';
import { AgentError } from '../errors/index.js';
import type { Manifest, ProgressEvent } from './types.js';
import { readProcStat } from '../proc/index.js';

export interface PidHolder {
  readonly pid: number;
  readonly comm: string;
  /** Exited; the pid is freed when its parent reaps it. */
  readonly zombie: boolean;
  readonly parent: number;
  /** `v2:jobs/x`: where a live holder runs, in the checkpoint's hierarchy. */
  readonly cgroup?: string;
}

function commOf(pid: number): string | undefined {
  try {
    return readFileSync(`/proc/${pid}/comm`, 'utf8').trimEnd();
  } catch {
    return undefined;
  }
}

/** The process holding pid now, or undefined when the pid is free. */
function holderOf(pid: number, hierarchy: Hierarchy): PidHolder | undefined {
  const stat = readProcStat(pid);
  if (!stat) return undefined;
  const zombie = stat.state === 'Z' || stat.state === 'X';
  const cgroup = zombie ? undefined : cgroupOfProcess(pid, hierarchy);
  return { pid, comm: stat.comm, zombie, parent: stat.ppid, ...(cgroup === undefined ? {} : { cgroup: `${hierarchy}:${cgroup}` }) };
}

/** `pid 812: a zombie of 800 (bash)` or `pid 812: sleep in cgroup v2:jobs/x`. */
function describeHolder(holder: PidHolder): string {
  if (holder.zombie) return `pid ${holder.pid}: a zombie of ${holder.parent} (${commOf(holder.parent) ?? 'gone'})`;
  return `pid ${holder.pid}: ${holder.comm}${holder.cgroup === undefined ? '' : ` in cgroup ${holder.cgroup}`}`;
}

/** What to do about live holders, fitting how the checkpoint was taken (its --after policy). */
function hint(manifest: Manifest): string {
  const after = manifest.options.after ?? 'prior';
  if (after === 'killed') {
    return `the checkpoint was taken with --after killed, so its own processes were killed then: these came later (an earlier restore of it, or processes that were given the same pids)`;
  }
  return `the checkpoint was taken with --after ${after}, which left its processes running: they may be these; a checkpoint taken with --after killed frees its pids`;
}

function taken(manifest: Manifest, holders: readonly PidHolder[], why: string): AgentError {
  return new AgentError('EBUSY', `pids of checkpoint ${manifest.id} are taken (${holders.map(describeHolder).join('; ')}): ${why}`, {
    details: { checkpoint: manifest.id, holders },
  });
}

// Pids of just-killed processes are free within milliseconds once their parent reaps them; a parent
// that has not done so after this long is not going to soon. (30 s, not less: under software
// emulation an agentctl takes seconds to start, and an operator's look at the progress line as long.)
const ZOMBIE_WAIT_MS = 30_000;
const ZOMBIE_POLL_MS = 10;

/**
 * Resolves once every saved pid of the checkpoint is free. EBUSY at once when a live process holds
 * one; zombies are waited for (up to waitMs, said on the progress stream), then EBUSY naming them.
 */
export async function waitForSavedPids(
  manifest: Manifest,
  progress: (event: ProgressEvent) => void,
  options: { signal?: AbortSignal; waitMs?: number } = {},
): Promise<void> {
  const pids = manifest.trees.flatMap((t) => t.processes.map((p) => p.pid));
  const deadline = Date.now() + (options.waitMs ?? ZOMBIE_WAIT_MS);
  let announced = '';
  for (let attempt = 0; ; attempt++) {
    const holders = pids.map((pid) => holderOf(pid, manifest.hierarchy)).filter((h): h is PidHolder => h !== undefined);
    if (holders.length === 0) return;
    if (holders.some((h) => !h.zombie)) {
      throw taken(
        manifest,
        holders,
        `CRIU restores every process with its saved pid, so stop those processes first (${hint(manifest)}), ` +
          `or restore it into a new PID namespace (--pid-namespace new), where the saved pids are its own`,
      );
    }
    if (Date.now() >= deadline) {
      throw taken(
        manifest,
        holders,
        `their parents did not reap them within ${options.waitMs ?? ZOMBIE_WAIT_MS} ms; the pids are free once they do (or exit)`,
      );
    }
    if (options.signal?.aborted) {
      throw new AgentError(
        'EINTR',
        `restore of ${manifest.id} cancelled while waiting for its pids to be freed: ${String((options.signal.reason as Error)?.message ?? options.signal.reason)}`,
      );
    }
    const message = `waiting for zombies to be reaped, to free their pids: ${holders.map(describeHolder).join('; ')}`;
    if (message !== announced) progress({ stage: 'pids', message });
    announced = message;
    if (attempt < 8) await backoff(attempt);
    else await new Promise((resolve) => setTimeout(resolve, ZOMBIE_POLL_MS));
  }
}
