// Reading what went wrong out of a CRIU log. Success is judged by CRIU's exit code, never by the
// log: every run on this kind of host prints one harmless "Error" line (RLIMIT_NOFILE, below).

import { open } from 'node:fs/promises';
import type { ErrorCode } from '../errors/index.js';

// A -v4 log is ~100 KB for a small tree but grows with the number of pages and files. The errors
// that matter are at the end, so read at most this much from the tail.
const LOG_TAIL_BYTES = 4 << 20;

// Printed by every dump and restore when CRIU cannot raise its own fd limit (a container limit).
const HARMLESS = [/rlimit: Can't setup RLIMIT_NOFILE/];

// "(00.123456) Error (criu/cr-dump.c:2111): Dumping FAILED." and, from restored tasks,
// "(00.134177)  11237: Error (criu/files-reg.c:2175): ...".
const ERROR_LINE = /\bError \(/;
const TIMESTAMP = /^\(\d+\.\d+\)\s*/;

/** The last LOG_TAIL_BYTES of a log, or undefined if it cannot be read (no log was written). */
export async function readLogTail(path: string): Promise<string | undefined> {
  let handle;
  try {
    handle = await open(path, 'r');
  } catch {
    return undefined;
  }
  try {
    const { size } = await handle.stat();
    const length = Math.min(size, LOG_TAIL_BYTES);
    const buffer = Buffer.alloc(length);
    await handle.read(buffer, 0, length, size - length);
    return buffer.toString('utf8');
  } catch {
    return undefined;
  } finally {
    await handle.close();
  }
}

/** The meaningful error lines of a CRIU log (or of its stderr), timestamps stripped. */
export function criuErrorLines(text: string): string[] {
  return text
    .split('\n')
    .filter((line) => ERROR_LINE.test(line) && !HARMLESS.some((re) => re.test(line)))
    .map((line) => line.replace(TIMESTAMP, '').trim());
}

/**
 * What CRIU printed on stderr (normally nothing: -o takes the log; but a log it cannot create, or an
 * images directory it cannot open, is reported there): its error lines, else every non-empty line.
 */
export function stderrLines(text: string): string[] {
  const errors = criuErrorLines(text);
  if (errors.length > 0) return errors;
  return text
    .split('\n')
    .map((line) => line.replace(TIMESTAMP, '').trim())
    .filter((line) => line !== '' && !HARMLESS.some((re) => re.test(line)));
}

/** ENOSPC when the failure was a full disk or quota (CRIU leaves partial images then), else ECRIU. */
export function failureCode(text: string): ErrorCode {
  return /No space left on device|Disk quota exceeded/.test(text) ? 'ENOSPC' : 'ECRIU';
}

/** What a CRIU log says of its own run: CRIU's version and the kernel release it ran on. */
export function logFacts(text: string): { version?: string; kernel?: string } {
  // "(00.000133) Version: 4.1.1 (gitid 0)" and "(00.000145) Running on vm Linux 6.18.44-fc-v1045 #1 SMP ...".
  const version = /^\(\d+\.\d+\)\s*Version:\s*(\S+)/m.exec(text)?.[1];
  const kernel = /^\(\d+\.\d+\)\s*Running on \S+ Linux (\S+)/m.exec(text)?.[1];
  return { ...(version ? { version } : {}), ...(kernel ? { kernel } : {}) };
}

/** The leading numbers of a version or kernel release: "6.18.44-fc-v1045" -> [6, 18, 44]. */
export function versionNumbers(version: string): number[] {
  return (/^\d+(\.\d+)*/.exec(version)?.[0] ?? '')
    .split('.')
    .filter((p) => p !== '')
    .map(Number);
}

/** Whether version a is older than b, comparing their numbers ("4.1.1" < "4.2"). */
export function olderThan(a: string, b: string): boolean {
  const x = versionNumbers(a);
  const y = versionNumbers(b);
  for (let i = 0; i < Math.max(x.length, y.length); i++) {
    const d = (x[i] ?? 0) - (y[i] ?? 0);
    if (d !== 0) return d < 0;
  }
  return false;
}

// Linux 6.16 (kernel commit 7d8d93fdde50b) made SO_PASSCRED (option 16) and SO_PASSSEC (34) fail
// with EOPNOTSUPP on sockets other than AF_UNIX and AF_NETLINK. CRIU before 4.2 reads both from
// every socket it dumps, so it cannot dump a process holding an inet socket on such a kernel; CRIU
// 4.2 reads them only where they exist (public CRIU issues 2705 and 2718; docs/criu-selection.md).
const PASSCRED_ERROR = /Can't get 1:(16|34) opt/;

/**
 * A failure that is a known mismatch between this CRIU and this kernel, said in words a user can
 * act on; undefined for any other failure. The versions come from the log itself ("Version:",
 * "Running on"), else from `known` (the log's head may be past the part read).
 */
export function knownMismatch(text: string, known: { criuVersion?: string; kernel?: string } = {}): string | undefined {
  if (!PASSCRED_ERROR.test(text)) return undefined;
  const facts = logFacts(text);
  const version = facts.version ?? known.criuVersion;
  const kernel = facts.kernel ?? known.kernel;
  if (kernel === undefined || olderThan(kernel, '6.16')) return undefined;
  if (version !== undefined && !olderThan(version, '4.2')) return undefined;
  return (
    `CRIU ${version ?? '(version unknown)'} cannot dump sockets on Linux >= 6.16 (this is ${kernel}; kernel commit ` +
    '7d8d93fdde50b made SO_PASSCRED/SO_PASSSEC unix- and netlink-only, and CRIU before 4.2 asks every socket for them): ' +
    'install CRIU >= 4.2 (npm run setup builds it)'
  );
}

// CRIU seizes every task with ptrace (PTRACE_SEIZE), and a task has one tracer at most: a task that
// strace or gdb traces cannot be seized. CRIU logs the EPERM as a warning, then its error: measured
// with 4.2.1, "Unseizable non-zombie PID found" for a running task, and "zombie PID (comm sleep)
// found while seizing" for one in a frozen cgroup (which is what agentd dumps), after retrying 10 s.
const UNSEIZABLE = /Unable to interrupt task: (\d+) \(Operation not permitted\)/;

// CRIU restores a tree into a new time namespace (so that its CLOCK_MONOTONIC goes on from the
// dumped value) and dumps only a tree whose tasks share its root's. Measured with 4.2.1, a job
// restored with --pid-namespace new (root: the namespace's init, in the host's time namespace):
// "Can't dump nested time namespace for 17899".
const NESTED_TIMENS = /Can't dump nested time namespace for (\d+)/;

/** Who traces a task: the tracer's pid and command, or undefined (not traced, or gone). */
export type TracerLookup = (pid: number) => { pid: number; comm: string } | undefined;

/**
 * A failure because the program uses something CRIU refuses to checkpoint, said with the reason;
 * undefined for any other failure. `tracerOf` looks up the task's tracer while it still exists.
 */
export function knownRefusal(text: string, tracerOf: TracerLookup): string | undefined {
  const nested = NESTED_TIMENS.exec(text);
  if (nested) {
    return (
      `process ${nested[1]} is in a time namespace below its tree's root, and CRIU dumps one time namespace per tree: ` +
      'a job restored with --pid-namespace new is so (CRIU restored it into a time namespace of its own, the ' +
      "namespace's init is in the host's), and cannot be checkpointed again (docs/pid-namespace.md)"
    );
  }
  const unseizable = UNSEIZABLE.exec(text);
  if (!unseizable) return undefined;
  const pid = Number(unseizable[1]);
  const tracer = tracerOf(pid);
  const who = tracer
    ? `it is traced by pid ${tracer.pid} (${tracer.comm})`
    : 'CRIU was not allowed to trace it (another process traces it, or did)';
  return (
    `process ${pid} cannot be checkpointed: ${who}, and CRIU must trace every process it dumps (ptrace allows one ` +
    'tracer per process); detach the debugger or strace first'
  );
}

const CREATED_CGROUP = /cg: Created cgroup dir ([^/\s]+)\/(.*)$/gm;

/**
 * The cgroups a restore's log says CRIU made (`cg: Created cgroup dir YARD//PATH`, an info line,
 * there at -v3 and above, in CRIU 3.17 and 4.x alike): the yard names the hierarchy
 * (src/cgroup/stray.ts), the path is the cgroup's in it.
 */
export function createdCgroupDirs(text: string): { yard: string; path: string }[] {
  return [...text.matchAll(CREATED_CGROUP)].map((m) => ({ yard: m[1], path: '/' + m[2].trim().replace(/^\/+/, '') }));
}
