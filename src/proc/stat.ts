// /proc/PID/stat: the few fields agentd needs, parsed once. The command name (field 2) is in
// parentheses and may itself hold spaces or parentheses, so the fields are split after the last ')'.

import { readFileSync } from 'node:fs';

/** Fields of proc(5)'s /proc/PID/stat, by their meaning. */
export interface ProcStat {
  readonly pid: number;
  /** Field 2, without its parentheses (at most 15 bytes, as the kernel keeps it). */
  readonly comm: string;
  /** Field 3: R, S, D, T (stopped), t (traced), Z (zombie), ... */
  readonly state: string;
  readonly ppid: number;
  /** Field 5: the process group. */
  readonly pgrp: number;
  /** Field 6: the session. */
  readonly session: number;
  /** Field 9: the kernel's PF_* flags of the task (include/linux/sched.h), e.g. PF_EXITING 0x4. */
  readonly flags: number;
  /** Field 22: start time in clock ticks since boot; tells a recycled pid apart. */
  readonly startTime: number;
  /** Fields 14 and 15: CPU time used so far, user and system, in clock ticks. */
  readonly cpuTicks: number;
}

/** Parses the text of /proc/PID/stat. */
export function parseProcStat(pid: number, text: string): ProcStat {
  const close = text.lastIndexOf(')');
  const fields = text.slice(close + 2).split(' ');
  return {
    pid,
    comm: text.slice(text.indexOf('(') + 1, close),
    state: fields[0] ?? '',
    ppid: Number(fields[1]),
    pgrp: Number(fields[2]),
    session: Number(fields[3]),
    flags: Number(fields[6]),
    startTime: Number(fields[19]),
    cpuTicks: Number(fields[11]) + Number(fields[12]),
  };
}

/** The process's stat, or undefined when it is gone (or /proc cannot be read). */
export function readProcStat(pid: number): ProcStat | undefined {
  let text: string;
  try {
    text = readFileSync(`/proc/${pid}/stat`, 'utf8');
  } catch {
    return undefined;
  }
  return parseProcStat(pid, text);
}
