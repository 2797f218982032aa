// A CRIU whose agent died mid-dump. runCriu starts CRIU in a session of its own (so that killing its
// process group reaches everything CRIU forks), so a SIGKILLed agent leaves it running: it finishes
// its dump (or fails) and then puts the freezer back to FROZEN, as it found it. Its image is never
// published (the agent that would have written the manifest is gone), but the cgroup must not be
// touched while it works: a recovery that thaws the cgroup, or removes its image directory, while
// CRIU still holds the tasks is undone when CRIU re-freezes the cgroup afterwards, and then nobody
// is left to thaw it. Recovery first ends such a CRIU by the rule every stop of a dump follows:
// killed only while it holds no task (killing it while it holds the tasks can kill them,
// docs/criu-faults.md), let run to its own end otherwise.

import { readdirSync } from 'node:fs';
import { CRIU_HUNG_AFTER_MS, stopCriuSafely } from '../criu/index.js';
import { readArgs, readProcStat } from '../proc/index.js';

/** A CRIU process an earlier agent left running in an image directory. */
interface OrphanCriu {
  readonly pid: number;
  /** Start time in clock ticks since boot (/proc/PID/stat field 22): tells a recycled pid apart. */
  readonly startTime: number;
  /** The process group CRIU leads (runCriu makes it a group leader), when it does. */
  readonly leadsGroup: boolean;
  readonly pgid: number;
}

function stillThere(p: OrphanCriu): boolean {
  const stat = readProcStat(p.pid);
  return stat !== undefined && stat.state !== 'Z' && stat.startTime === p.startTime;
}

/** Live processes whose arguments hold `-D <dir>/...`: CRIU runs (or a stand-in) writing under dir. */
function criuWorkingIn(dir: string): OrphanCriu[] {
  const prefix = dir.endsWith('/') ? dir : dir + '/';
  const found: OrphanCriu[] = [];
  for (const entry of readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    const pid = Number(entry);
    if (pid === process.pid) continue;
    // readArgs waits out an execve: the wrapper that starts a dump's CRIU (systemd-run --scope)
    // execs it in place, and a scan landing in that moment would otherwise miss the CRIU.
    const args = readArgs(pid);
    if (args === undefined) continue; // exited
    const d = args.indexOf('-D');
    if (d < 0 || !args[d + 1]?.startsWith(prefix)) continue;
    const stat = readProcStat(pid);
    if (!stat || stat.state === 'Z') continue;
    found.push({ pid, startTime: stat.startTime, leadsGroup: stat.pgrp === pid, pgid: stat.pgrp });
  }
  return found;
}

const POLL_MS = 20;

async function waitGone(procs: readonly OrphanCriu[], until: number): Promise<boolean> {
  for (;;) {
    if (!procs.some(stillThere)) return true;
    if (Date.now() >= until) return false;
    await new Promise((resolve) => setTimeout(resolve, POLL_MS));
  }
}

/**
 * Ends every CRIU working under dir by the rule every stop of a dump follows (stopCriuSafely,
 * docs/criu-faults.md): killed at once while it holds no task, let run to its own end while it
 * does, killed anyway if it holds them past hungAfterMs. Says what happened, for the recovery
 * report, or undefined when there was none.
 */
export async function endOrphanedCriu(dir: string, hungAfterMs = CRIU_HUNG_AFTER_MS): Promise<string | undefined> {
  const found = criuWorkingIn(dir);
  // What a found group leader forked (CRIU's helpers, or CRIU itself under a wrapper) is ended with
  // its leader, by the leader's rule, never on its own.
  const procs = found.filter((p) => p.leadsGroup || !found.some((q) => q.leadsGroup && q.pid === p.pgid));
  if (procs.length === 0) return undefined;
  const pids = procs.map((p) => p.pid).join(', ');
  const results = await Promise.all(
    procs.map(async (p) => {
      if (p.leadsGroup) return stopCriuSafely(p.pid, { hungAfterMs, ended: () => !stillThere(p) });
      // Not started by runCriu (it makes CRIU a group leader): nothing of ours to judge it by.
      try {
        process.kill(p.pid, 'SIGKILL');
      } catch {
        // gone meanwhile
      }
      return { how: 'safe' as const, waitedMs: 0, held: [] };
    }),
  );
  const gone = await waitGone(procs, Date.now() + 5000);
  const waited = Math.max(...results.map((r) => r.waitedMs));
  const what = results.some((r) => r.how === 'forced')
    ? `held its tasks for over ${hungAfterMs} ms: killed it anyway (hung)`
    : results.every((r) => r.how === 'ended')
      ? `held its tasks: let it finish (${waited} ms)`
      : results.some((r) => r.how === 'ended')
        ? `let it finish where it held tasks, killed it where it held none (${waited} ms)`
        : 'held no task yet: killed it';
  return `its CRIU (pid ${pids}) was still running and ${what}${gone ? '' : ', but it had not exited 5 s later'}`;
}
