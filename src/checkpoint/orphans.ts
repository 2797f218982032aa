// A CRIU whose agent died mid-dump. runCriu starts CRIU in a session of its own (so that killing its
// process group reaches everything CRIU forks), so a SIGKILLed agent leaves it running: it finishes
// its dump (or fails) and then puts the freezer back to FROZEN, as it found it. Its image is never
// published (the agent that would have written the manifest is gone), but the cgroup must not be
// touched while it works: a recovery that thaws the cgroup, or removes its image directory, while
// CRIU still holds the tasks is undone when CRIU re-freezes the cgroup afterwards, and then nobody
// is left to thaw it. Recovery first lets such a CRIU end, and kills it if it does not end soon (a
// hung CRIU): killing CRIU mid-dump releases the tasks unharmed, which is also what runCriu's own
// timeout does.

import { readdirSync, readFileSync } from 'node:fs';
import { readProcStat } from '../proc/index.js';

interface Found {
  readonly pid: number;
  /** Start time in clock ticks since boot (/proc/PID/stat field 22): tells a recycled pid apart. */
  readonly startTime: number;
  /** The process group CRIU leads (runCriu makes it a group leader), when it does. */
  readonly leadsGroup: boolean;
}

function stillThere(p: Found): boolean {
  const stat = readProcStat(p.pid);
  return stat !== undefined && stat.state !== 'Z' && stat.startTime === p.startTime;
}

/** Live processes whose arguments hold `-D <dir>/...`: CRIU runs (or a stand-in) writing under dir. */
export function criuWorkingIn(dir: string): Found[] {
  const prefix = dir.endsWith('/') ? dir : dir + '/';
  const found: Found[] = [];
  for (const entry of readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    const pid = Number(entry);
    if (pid === process.pid) continue;
    let args: string[];
    try {
      args = readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0');
    } catch {
      continue; // exited
    }
    const d = args.indexOf('-D');
    if (d < 0 || !args[d + 1]?.startsWith(prefix)) continue;
    const stat = readProcStat(pid);
    if (!stat || stat.state === 'Z') continue;
    found.push({ pid, startTime: stat.startTime, leadsGroup: stat.pgrp === pid });
  }
  return found;
}

// How long an orphaned CRIU gets to finish before it is killed. A dump here writes 0.3 to 1.7 GB/s
// (docs/criu.md), so a workload of a few GiB is done well within it; beyond it, CRIU is taken for hung.
export const ORPHAN_GRACE_MS = 10_000;
const POLL_MS = 20;

async function waitGone(procs: readonly Found[], until: number): Promise<boolean> {
  for (;;) {
    if (!procs.some(stillThere)) return true;
    if (Date.now() >= until) return false;
    await new Promise((resolve) => setTimeout(resolve, POLL_MS));
  }
}

/**
 * Lets every CRIU working under dir end, killing (with its process group, where CRIU's helpers
 * live) any that is still there after graceMs. Says what happened, for the recovery report, or
 * undefined when there was none.
 */
export async function endOrphanedCriu(dir: string, graceMs = ORPHAN_GRACE_MS): Promise<string | undefined> {
  const procs = criuWorkingIn(dir);
  if (procs.length === 0) return undefined;
  const pids = procs.map((p) => p.pid).join(', ');
  const started = Date.now();
  if (await waitGone(procs, started + graceMs)) {
    return `its CRIU (pid ${pids}) was still running: waited ${Date.now() - started} ms for it to finish`;
  }
  for (const p of procs.filter(stillThere)) {
    try {
      process.kill(p.leadsGroup ? -p.pid : p.pid, 'SIGKILL');
    } catch {
      // gone meanwhile
    }
  }
  const gone = await waitGone(procs, Date.now() + 5000);
  return `its CRIU (pid ${pids}) was still running after ${graceMs} ms: killed it${gone ? '' : ', but it had not exited 5 s later'}`;
}
