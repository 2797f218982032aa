// Stopping a CRIU dump without harming what it dumps: the one rule every path of agentd follows
// (timeout, cancel, SIGTERM, shutdown, recovery of an orphaned CRIU). See docs/criu-faults.md.
//
// Measured (docs/criu-faults.md): a CRIU killed while it holds a task under ptrace can leave that
// task to die of SIGTRAP: CRIU runs syscalls inside the task by planting `syscall; int3` in its code
// and setting its registers, and a task left between that and CRIU putting its registers back
// resumes on the trap. A CRIU killed before it has seized anything, or after it has let everything
// go, harms nobody. So CRIU is killed only at a moment when no task is traced by it; once it holds
// tasks it is let run to its own end (a dump always releases its tasks when it ends, well or not).
//
// The check is race-free because CRIU is stopped (SIGSTOP to its process group) while it is made:
// a stopped CRIU cannot seize a task, and a PTRACE_SEIZE it had in flight has completed by the time
// it is seen stopped.

import { readdirSync, readFileSync } from 'node:fs';
import { readProcStat } from '../proc/index.js';

/** A thread traced by CRIU, for messages. */
export interface HeldTask {
  readonly pid: number;
  readonly tid: number;
  readonly tracer: number;
}

export interface SafeStopOptions {
  /** Give up waiting for a safe moment once CRIU has made no progress (used no CPU) for this long, and kill anyway: it is taken for hung. */
  readonly hungAfterMs?: number;
  /** How often to look again while CRIU holds tasks. */
  readonly pollMs?: number;
}

export interface SafeStopResult {
  /** 'safe': killed while it held no task; 'ended': it ended by itself first; 'forced': killed after hungAfterMs while holding tasks. */
  readonly how: 'safe' | 'ended' | 'forced';
  /** How long the stop waited for a safe moment. */
  readonly waitedMs: number;
  /** Tasks CRIU held at the last look before a forced kill. */
  readonly held: readonly HeldTask[];
}

// A dump of several GiB ends well within a minute here (0.3 to 1.7 GB/s, docs/criu.md); a CRIU
// that holds its tasks for longer past the moment it was asked to stop is hung.
export const CRIU_HUNG_AFTER_MS = 60_000;
const POLL_MS = 20;
const STOP_WAIT_MS = 200;

/** Live members of a process group (CRIU and whatever it forked). */
export function groupMembers(pgid: number): number[] {
  const members: number[] = [];
  for (const entry of readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    const stat = readProcStat(Number(entry));
    if (stat && stat.pgrp === pgid && stat.state !== 'Z' && stat.state !== 'X') members.push(stat.pid);
  }
  return members;
}

/** Every thread on the host whose tracer is one of `tracers`. */
export function tasksTracedBy(tracers: ReadonlySet<number>): HeldTask[] {
  const held: HeldTask[] = [];
  if (tracers.size === 0) return held;
  for (const entry of readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    let tids: string[];
    try {
      tids = readdirSync(`/proc/${entry}/task`);
    } catch {
      continue;
    }
    for (const tid of tids) {
      let status: string;
      try {
        status = readFileSync(`/proc/${entry}/task/${tid}/status`, 'utf8');
      } catch {
        continue;
      }
      const tracer = Number(/^TracerPid:\s+(\d+)/m.exec(status)?.[1] ?? 0);
      if (tracer !== 0 && tracers.has(tracer)) held.push({ pid: Number(entry), tid: Number(tid), tracer });
    }
  }
  return held;
}

function signalGroup(pgid: number, signal: NodeJS.Signals): boolean {
  try {
    process.kill(-pgid, signal);
    return true;
  } catch {
    return false; // the group is empty: CRIU is gone
  }
}

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

/** Waits until every member of the group is stopped (T, or t under a tracer such as strace); false if the group is gone. */
async function waitStopped(pgid: number): Promise<boolean> {
  const until = Date.now() + STOP_WAIT_MS;
  for (;;) {
    const members = groupMembers(pgid);
    if (members.length === 0) return false;
    if (members.every((pid) => /^[Tt]/.test(readProcStat(pid)?.state ?? 'T'))) return true;
    if (Date.now() >= until) return true; // a member in D state for long: judge on what is traced now
    await sleep(1);
  }
}

/**
 * Kills the process group `pgid` (a CRIU that leads its group, and its helpers) at the first moment
 * it holds no task under ptrace, and resolves once the kill was sent (or the group ended by
 * itself). `ended()` tells that the caller saw CRIU exit meanwhile; `onHeld` hears each time it
 * has to wait because CRIU holds tasks.
 */
export async function stopCriuSafely(
  pgid: number,
  options: SafeStopOptions & { ended?: () => boolean; onHeld?: (held: readonly HeldTask[]) => void } = {},
): Promise<SafeStopResult> {
  const hungAfter = options.hungAfterMs ?? CRIU_HUNG_AFTER_MS;
  const poll = options.pollMs ?? POLL_MS;
  const started = Date.now();
  // Hung means no progress: a CRIU that still uses CPU is working (a big dump under software
  // emulation in the VM guests held its task for over a minute after the stop, and a kill then
  // cost the task); one that uses none for hungAfter is waiting for something that will not come.
  // A CRIU busy for ten times as long is taken for hung as well.
  let ticks = -1;
  let progressAt = started;
  for (;;) {
    if (options.ended?.()) return { how: 'ended', waitedMs: Date.now() - started, held: [] };
    // First a look without stopping CRIU: while it plainly holds tasks there is nothing to decide,
    // and stopping it at every poll only slows it down (and a stop and continue can end some of
    // its blocking calls with EINTR, signal(7)). The decision itself is made on a stopped group.
    const running = new Set(groupMembers(pgid));
    if (running.size === 0) return { how: 'ended', waitedMs: Date.now() - started, held: [] };
    const used = [...running].reduce((sum, pid) => sum + (readProcStat(pid)?.cpuTicks ?? 0), 0);
    if (used !== ticks) [ticks, progressAt] = [used, Date.now()];
    const hung = Date.now() - progressAt >= hungAfter || Date.now() - started >= 10 * hungAfter;
    const seen = heldBy(running);
    if (seen.length > 0 && !hung) {
      options.onHeld?.(seen);
      await sleep(poll);
      continue;
    }
    if (!signalGroup(pgid, 'SIGSTOP') || !(await waitStopped(pgid))) return { how: 'ended', waitedMs: Date.now() - started, held: [] };
    const held = heldBy(new Set(groupMembers(pgid)));
    const forced = held.length > 0 && hung;
    if (held.length === 0 || forced) {
      signalGroup(pgid, 'SIGKILL');
      signalGroup(pgid, 'SIGCONT');
      return { how: forced ? 'forced' : 'safe', waitedMs: Date.now() - started, held };
    }
    signalGroup(pgid, 'SIGCONT');
    options.onHeld?.(held);
    await sleep(poll);
  }
}

/** Threads CRIU's group holds under ptrace; a member traced by another member (CRIU run under strace, say) is not a task CRIU dumps. */
function heldBy(members: ReadonlySet<number>): HeldTask[] {
  return tasksTracedBy(members).filter((t) => !members.has(t.pid));
}
