// Which processes of a checkpoint did not come out of a failed attempt, and what the kernel said of
// them. A CRIU killed from outside (the OOM killer, an operator) while it holds a task can leave the
// task to die of SIGTRAP (docs/criu-faults.md); the kernel then logs `traps: COMM[PID] trap int3`,
// which is the only word on why, since the task was not our child.

import { closeSync, constants, openSync, readFileSync, readSync } from 'node:fs';
import { readProcStat, type ProcStat } from '../proc/index.js';
import type { ProcessRecord, TreeRecord } from './types.js';

export interface LostProcess extends ProcessRecord {
  /** The kernel's log lines naming it (`traps: perl[123] trap int3 ...`), newest last. */
  readonly kernel: readonly string[];
}

// include/linux/sched.h: set once the task has begun exiting.
const PF_EXITING = 0x4;

function gone(pid: number): boolean {
  const stat = readProcStat(pid);
  return stat === undefined || ended(stat);
}

/** A zombie or a dead task: nothing it could still do. */
function ended(stat: ProcStat): boolean {
  return stat.state === 'Z' || stat.state === 'X';
}

// The kernel's ring buffer, read through /dev/kmsg without blocking; only the most recent records
// are of interest (a failed dump is seconds old), so a cap keeps the read small.
const KMSG_MAX_RECORDS = 4096;

function kernelLines(): string[] {
  let fd: number;
  try {
    fd = openSync('/dev/kmsg', constants.O_RDONLY | constants.O_NONBLOCK);
  } catch {
    return []; // not root, or no /dev/kmsg in this container
  }
  const lines: string[] = [];
  const buf = Buffer.alloc(8192);
  try {
    for (;;) {
      let n: number;
      try {
        n = readSync(fd, buf, 0, buf.length, null);
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code === 'EPIPE') continue; // a record was overwritten while we read
        break; // EAGAIN: no more records
      }
      if (n <= 0) break;
      const record = buf.toString('utf8', 0, n);
      const text = record.slice(record.indexOf(';') + 1).split('\n')[0];
      lines.push(text);
      if (lines.length > KMSG_MAX_RECORDS) lines.shift();
    }
  } finally {
    closeSync(fd);
  }
  return lines;
}

/**
 * Where a process stands with respect to CRIU's trap. `trap`: it sits right at an `int3` (0xCC)
 * instruction, where a CRIU killed inside an injected syscall leaves a task (docs/criu-faults.md);
 * it dies of SIGTRAP at its next instruction. `clear`: it is gone, or stopped, frozen or asleep
 * anywhere else (after a syscall instruction or in its own code, never at an int3: that is a
 * debugger's business, and a debugger would be its tracer, which CRIU was). `running`: the kernel
 * cannot say yet, because the task is on a CPU or about to be (/proc/PID/syscall reads "running").
 */
export function trapState(pid: number): 'trap' | 'clear' | 'running' | 'exiting' {
  // A task on its way out (PF_EXITING, not yet a zombie) has no memory to look at once the kernel
  // has released it, and is not gone yet either: it reads 'exiting' until it is a zombie, so that
  // a caller waits for it. Read as 'clear', a doomed task caught there would be counted alive; that
  // is the likeliest reading of a fault run beside an emulated guest (1 in 8 runs) whose error
  // counted every process alive while the kernel logged the task's trap in the same second.
  const stat = readProcStat(pid);
  if (!stat || ended(stat)) return 'clear';
  if (stat.flags & PF_EXITING) return 'exiting';
  let pc: number;
  try {
    // "NR args... sp pc", or "-1 sp pc" outside a syscall, or "running".
    const fields = readFileSync(`/proc/${pid}/syscall`, 'utf8').trim().split(' ');
    if (fields.length < 3) return fields[0] === 'running' ? 'running' : 'clear';
    pc = Number(fields[fields.length - 1]);
  } catch {
    return 'clear'; // gone
  }
  if (!Number.isSafeInteger(pc) || pc <= 0) return 'clear';
  let fd: number | undefined;
  try {
    fd = openSync(`/proc/${pid}/mem`, constants.O_RDONLY);
    const byte = Buffer.alloc(1);
    return readSync(fd, byte, 0, 1, pc) === 1 && byte[0] === 0xcc ? 'trap' : 'clear';
  } catch {
    return 'clear';
  } finally {
    if (fd !== undefined) closeSync(fd);
  }
}

/** True when the process sits right at CRIU's trap (trapState `trap`). */
export function leftAtCriuTrap(pid: number): boolean {
  return trapState(pid) === 'trap';
}

/** The processes of `trees` that are gone now, each with what the kernel logged of it. */
export function lostProcesses(trees: readonly TreeRecord[]): LostProcess[] {
  const lost = trees.flatMap((t) => t.processes).filter((p) => gone(p.pid));
  if (lost.length === 0) return [];
  const log = kernelLines();
  return lost.map((p) => ({ ...p, kernel: log.filter((line) => line.includes(`[${p.pid}]`)).slice(-3) }));
}

/** "perl memory-pattern.pl" for "/usr/bin/perl /long/path/memory-pattern.pl 24 /tmp/x": the program and its first argument, without directories. */
function shortCommand(command: string): string {
  return command
    .split(' ')
    .slice(0, 2)
    .map((word) => word.slice(word.lastIndexOf('/') + 1))
    .join(' ');
}

/** One sentence for an error message: who died, and the kernel's word on it. */
export function describeLost(lost: readonly LostProcess[], survivors: number, state: string): string {
  const who = lost
    .map(
      (p) =>
        `process ${p.pid} (${shortCommand(p.command)})${p.kernel.length ? ` died: the kernel logged "${p.kernel[p.kernel.length - 1]}"` : ' is gone'}`,
    )
    .join('; ');
  return `${who}; the other ${survivors} process${survivors === 1 ? ' is' : 'es are'} back to ${state}`;
}
