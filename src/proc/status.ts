// /proc/PID/status (TracerPid, NSpid) and /proc/PID/task/TID/children.

import { readdirSync, readFileSync } from 'node:fs';

/** TracerPid: the pid tracing this process (ptrace), 0 for none; undefined when it is gone. */
export function readTracerPid(pid: number): number | undefined {
  try {
    const value = /^TracerPid:\s+(\d+)/m.exec(readFileSync(`/proc/${pid}/status`, 'utf8'))?.[1];
    return value === undefined ? undefined : Number(value);
  } catch {
    return undefined;
  }
}

/**
 * NSpid: the process's pid in each PID namespace it is in, the host's first and its own last
 * (`NSpid: 4494 3232` for a process that is 3232 in a child namespace); undefined when it is gone.
 */
export function readNsPids(pid: number): number[] | undefined {
  try {
    const line = /^NSpid:\s+(.*)$/m.exec(readFileSync(`/proc/${pid}/status`, 'utf8'))?.[1];
    return line === undefined ? undefined : line.trim().split(/\s+/).map(Number);
  } catch {
    return undefined;
  }
}

/** The children of every thread of the process (/proc/PID/task/TID/children); empty when it is gone. */
export function readChildren(pid: number): number[] {
  const children: number[] = [];
  let tasks: string[];
  try {
    tasks = readdirSync(`/proc/${pid}/task`);
  } catch {
    return children;
  }
  for (const tid of tasks) {
    try {
      children.push(...readFileSync(`/proc/${pid}/task/${tid}/children`, 'utf8').split(' ').filter(Boolean).map(Number));
    } catch {
      // the thread ended
    }
  }
  return children;
}

/** The process and all its descendants, parents before children. */
export function readDescendants(pid: number): number[] {
  const out: number[] = [];
  const visit = (p: number): void => {
    out.push(p);
    for (const child of readChildren(p)) visit(child);
  };
  visit(pid);
  return out;
}
