// /proc/PID/status: the one line agentd reads there.

import { readFileSync } from 'node:fs';

/** TracerPid: the pid tracing this process (ptrace), 0 for none; undefined when it is gone. */
export function readTracerPid(pid: number): number | undefined {
  try {
    const value = /^TracerPid:\s+(\d+)/m.exec(readFileSync(`/proc/${pid}/status`, 'utf8'))?.[1];
    return value === undefined ? undefined : Number(value);
  } catch {
    return undefined;
  }
}
