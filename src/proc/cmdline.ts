// /proc/PID/cmdline, read so that a process in the middle of an execve is not taken for one without
// arguments. While a process execs, the kernel gives it its new memory map before it lays out the
// new arguments there, and for that moment cmdline reads empty: a scan polling a shell script that
// execs its program saw the gap in 98 of 100 execs (docs/criu-faults.md, "Finding an orphaned
// CRIU"). Only kernel threads and zombies have no arguments for good.

import { readFileSync } from 'node:fs';

/** How long an empty cmdline of a live user process is read again before it is believed. */
export const EXEC_SETTLE_MS = 200;

function sleepSync(ms: number): void {
  Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, ms);
}

/** Kernel threads (pid 2 and its children) and zombies or dead processes: no arguments for good. */
function neverHasArgs(pid: number, status: string): boolean {
  return pid === 2 || /^PPid:\s+2$/m.test(status) || /^State:\s+[ZX]/m.test(status);
}

/**
 * The process's arguments (argv), or undefined when it is gone. An empty cmdline of a live user
 * process is read again every millisecond for up to settleMs, as it is one in the middle of an
 * execve; after that (or for a kernel thread or a zombie) the answer is [].
 */
export function readArgs(pid: number, settleMs: number = EXEC_SETTLE_MS): string[] | undefined {
  const until = Date.now() + settleMs;
  for (;;) {
    try {
      const cmdline = readFileSync(`/proc/${pid}/cmdline`, 'utf8');
      if (cmdline) return cmdline.slice(0, cmdline.endsWith('\0') ? -1 : undefined).split('\0');
      if (neverHasArgs(pid, readFileSync(`/proc/${pid}/status`, 'utf8')) || Date.now() >= until) return [];
    } catch {
      return undefined;
    }
    sleepSync(1);
  }
}
