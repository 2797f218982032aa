// Running the criu binary: an argument array (never a shell), a log file, a timeout and an
// AbortSignal, and errors that quote the log.

import { spawn } from 'node:child_process';
import { statfsSync, writeFileSync } from 'node:fs';
import { release } from 'node:os';
import { dirname } from 'node:path';
import { AgentError } from '../errors/index.js';
import { readProcStat, readTracerPid } from '../proc/index.js';
import { criuErrorLines, failureCode, knownMismatch, knownRefusal, readLogTail, stderrLines, type TracerLookup } from './log.js';
import { stopCriuSafely, type SafeStopResult } from './stop.js';

export interface CriuRunOptions {
  /** The criu binary, normally CriuInfo.path from findCriu. */
  readonly criuPath: string;
  /** Stop CRIU and fail with ETIMEDOUT after this long. Default: no limit. */
  readonly timeoutMs?: number;
  /** Aborting stops CRIU and fails with EINTR. */
  readonly signal?: AbortSignal;
  /**
   * How a timeout or an abort stops CRIU. 'now' (the default): SIGKILL to its process group at
   * once, for runs whose tasks are discarded on failure anyway (a restore). 'when-safe': only at a
   * moment when CRIU holds no task under ptrace (stopCriuSafely, docs/criu-faults.md), for a dump,
   * whose tasks must come out of it alive; once CRIU holds them it is let run to its own end and
   * its result is discarded.
   */
  readonly stop?: 'now' | 'when-safe';
  /** With stop 'when-safe': kill anyway once CRIU has held its tasks this long after the stop was asked (hung). */
  readonly hungAfterMs?: number;
  /**
   * Let CRIU stop its parasite code with x86 hardware breakpoints (CRIU's default). Default false.
   *
   * Why off: on this host's hypervisor (PVM, kernel 6.18) a debug-register breakpoint set through
   * ptrace never fires, so CRIU 4.1.1 waits forever ("Waiting for PID to trap") at the end of every
   * dump and restore, although `criu check` passes. CRIU_FAULT=130 (its FI_NO_BREAKPOINTS switch,
   * in the non-fatal range) makes it single-step to the parasite's sigreturn with PTRACE_SYSCALL
   * instead, the path it always takes on architectures without breakpoints. Measured here: a
   * single-process dump then takes 0.11-0.14 s instead of hanging.
   */
  readonly useBreakpoints?: boolean;
  /** More arguments, appended as given. */
  readonly extraArgs?: readonly string[];
}

export interface CriuRunResult {
  /** Always 0: a non-zero exit is thrown as an AgentError. */
  readonly exitCode: number;
  readonly durationMs: number;
  /** CRIU's log (-o), kept for diagnosis. */
  readonly logPath: string;
  readonly args: readonly string[];
}

// After SIGKILL, how long to wait for CRIU to be reaped before giving up on it. A task in a frozen
// v1 cgroup ignores SIGKILL until thawed, and CRIU can be one (restore into a frozen cgroup).
const KILL_GRACE_MS = 2_000;

// How long to wait, after CRIU's exit, for the end of its stderr (see below).
const STDERR_DRAIN_MS = 200;

// stderr is normally empty (-o sends the log to a file); keep the first 64 KiB of whatever comes.
const STDERR_LIMIT = 64 << 10;

// The OOM killer picks the largest process; CRIU holding a big task's pages in its pipes can be
// it, and a CRIU killed while it holds a task can take the task with it (docs/criu-faults.md).
// agentd runs as root, so it may lower the score of its own child; inherited by what CRIU forks.
function protectFromOomKiller(pid: number | undefined): void {
  if (pid === undefined) return;
  try {
    writeFileSync(`/proc/${pid}/oom_score_adj`, '-1000');
  } catch {
    // gone already, or not root: CRIU runs unprotected
  }
}

export function criuEnv(useBreakpoints: boolean | undefined): NodeJS.ProcessEnv {
  const env = { ...process.env };
  if (useBreakpoints) delete env.CRIU_FAULT;
  else env.CRIU_FAULT = '130';
  return env;
}

/**
 * Runs `criu ARGS`. `what` names the operation in messages ("criu dump of pid 123"). Resolves when
 * CRIU exits 0; otherwise throws ECRIU (or ENOSPC) quoting the log's error lines, ETIMEDOUT on
 * timeout, EINTR on abort. details always carry logPath, args and, when known, exitCode.
 */
export async function runCriu(what: string, args: readonly string[], logPath: string, opts: CriuRunOptions): Promise<CriuRunResult> {
  const allArgs = [...args, ...(opts.extraArgs ?? [])];
  const base = { logPath, args: allArgs };
  if (opts.signal?.aborted) {
    throw new AgentError('EINTR', `${what} was cancelled before it started`, { details: base });
  }

  const started = performance.now();
  type Outcome = {
    code: number | null;
    signal: NodeJS.Signals | null;
    stderr: string;
    stop?: 'timeout' | 'abort';
    killed: boolean;
    safeStop?: SafeStopResult;
    heldAtStop?: boolean;
    reaped: boolean;
    spawnError?: Error;
    pid?: number;
  };
  const outcome = await new Promise<Outcome>((resolve) => {
    // Own process group, so that a kill also reaches whatever CRIU forked (a half-restored tree).
    const child = spawn(opts.criuPath, allArgs, { stdio: ['ignore', 'ignore', 'pipe'], env: criuEnv(opts.useBreakpoints), detached: true });
    protectFromOomKiller(child.pid);
    let stderr = '';
    let stop: 'timeout' | 'abort' | undefined;
    let killed = false;
    let exited = false;
    let safeStop: SafeStopResult | undefined;
    let heldAtStop = false;
    let settled = false;
    let graceTimer: NodeJS.Timeout | undefined;

    const finish = (r: { code: number | null; signal: NodeJS.Signals | null; reaped: boolean; spawnError?: Error }): void => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      clearTimeout(graceTimer);
      opts.signal?.removeEventListener('abort', onAbort);
      resolve({ ...r, stderr, stop, killed, safeStop, heldAtStop, pid: child.pid });
    };
    const afterKill = (): void => {
      killed = true;
      graceTimer = setTimeout(() => finish({ code: null, signal: null, reaped: false }), KILL_GRACE_MS);
    };
    const kill = (why: 'timeout' | 'abort'): void => {
      if (stop || settled || child.pid === undefined) return;
      stop = why;
      if (opts.stop === 'when-safe') {
        void stopCriuSafely(child.pid, { hungAfterMs: opts.hungAfterMs, ended: () => exited, onHeld: () => (heldAtStop = true) }).then(
          (result) => {
            safeStop = result;
            if (result.how !== 'ended') afterKill();
          },
        );
        return;
      }
      try {
        process.kill(-child.pid, 'SIGKILL');
      } catch {
        child.kill('SIGKILL');
      }
      afterKill();
    };
    const onAbort = (): void => kill('abort');
    const timer = opts.timeoutMs !== undefined ? setTimeout(() => kill('timeout'), opts.timeoutMs) : undefined;
    opts.signal?.addEventListener('abort', onAbort, { once: true });

    child.stderr!.setEncoding('utf8');
    child.stderr!.on('data', (chunk: string) => {
      if (stderr.length < STDERR_LIMIT) stderr += chunk.slice(0, STDERR_LIMIT - stderr.length);
    });
    child.on('error', (err) => finish({ code: null, signal: null, reaped: true, spawnError: err }));
    // Wait for stderr's end after the exit, briefly: a task CRIU forked (a half-restored tree) can
    // hold the pipe open long after CRIU itself is gone.
    let stderrEnded = false;
    child.stderr!.on('end', () => (stderrEnded = true));
    child.on('exit', (code, signal) => {
      exited = true;
      // CRIU killed by a signal (the OOM killer, an operator) cannot reap what it forked: early on it
      // forks short-lived probes that stop themselves for its ptrace, and one caught then stays
      // stopped forever, re-parented to init (seen in test/faults/criu-faults.test.ts). They are in
      // CRIU's process group: end them with it. A CRIU that exits by itself has reaped its own.
      if (signal !== null) {
        try {
          process.kill(-child.pid!, 'SIGKILL');
        } catch {
          // nothing left in the group
        }
      }
      const done = (): void => finish({ code, signal, reaped: true });
      if (stderrEnded) return done();
      const drain = setTimeout(done, STDERR_DRAIN_MS);
      child.stderr!.once('end', () => {
        clearTimeout(drain);
        done();
      });
    });
  });
  const durationMs = Math.round(performance.now() - started);

  if (outcome.spawnError) {
    const errno = (outcome.spawnError as NodeJS.ErrnoException).code ?? outcome.spawnError.message;
    throw new AgentError('ECRIU', `${what}: could not run ${opts.criuPath}: ${errno}`, {
      cause: outcome.spawnError,
      details: base,
    });
  }
  if (outcome.stop) {
    const how = outcome.safeStop;
    // A CRIU let end that failed on its own: what it said, for whoever wonders why (not a cause of the EINTR).
    const own = !outcome.killed && outcome.code !== 0 ? await ownErrors(logPath) : '';
    const killed = !outcome.killed
      ? `let it end first (exit ${outcome.code ?? outcome.signal}${own}) and discarded its result${outcome.heldAtStop ? ': it held the tasks it dumps, and killing it then can kill them (docs/criu-faults.md)' : ''}`
      : !outcome.reaped
        ? `sent SIGKILL but it had not exited ${KILL_GRACE_MS} ms later (frozen?)`
        : how?.how === 'forced'
          ? `killed it after it had held ${how.held.length} task(s) for ${how.waitedMs} ms (hung); those tasks may not survive`
          : how?.how === 'safe'
            ? 'killed it while it held no task'
            : 'killed it';
    const details = { ...base, criuPid: outcome.pid, criuExited: outcome.reaped, durationMs, stopWaitedMs: how?.waitedMs };
    if (outcome.stop === 'timeout') {
      throw new AgentError('ETIMEDOUT', `${what} did not finish within ${opts.timeoutMs} ms; ${killed} (log: ${logPath})`, { details });
    }
    throw new AgentError('EINTR', `${what} was cancelled; ${killed} (log: ${logPath})`, { details });
  }
  if (outcome.code === 0) return { exitCode: 0, durationMs, logPath, args: allArgs };

  throw await criuFailure(what, logPath, {
    exitCode: outcome.code,
    signal: outcome.signal,
    stderr: outcome.stderr,
    args: allArgs,
    durationMs,
  });
}

/**
 * The error for a CRIU run that ended badly: ENOSPC for a full disk, else ECRIU, quoting the
 * error lines of its log (and of its stderr) and keeping the log's path in details.
 */
export async function criuFailure(
  what: string,
  logPath: string,
  run: { exitCode: number | null; signal?: NodeJS.Signals | number | null; stderr?: string; args: readonly string[]; durationMs?: number },
): Promise<AgentError> {
  const log = await readLogTail(logPath);
  const stderr = run.stderr ?? '';
  const logErrors = criuErrorLines(log ?? '');
  const errors = [...logErrors, ...stderrLines(stderr).filter((line) => !logErrors.includes(line))];
  const exit = run.exitCode !== null ? `exit ${run.exitCode}` : `killed by signal ${run.signal}`;
  const quoted =
    errors.length > 0
      ? errors.slice(0, 6).join(' | ')
      : log === undefined
        ? `no log at ${logPath} and nothing on stderr`
        : `no error lines in ${logPath}`;
  let code = failureCode(`${log ?? ''}\n${stderr}`);
  let cause = quoted;
  // A CRIU too old for this kernel: say what to install, then what CRIU said.
  const mismatch = code === 'ECRIU' ? knownMismatch(`${log ?? ''}\n${stderr}`, { kernel: release() }) : undefined;
  if (mismatch) cause = `${mismatch} (CRIU: ${quoted})`;
  // A program CRIU refuses: say why in words, then what CRIU said.
  const refusal = code === 'ECRIU' && !mismatch ? knownRefusal(`${log ?? ''}\n${stderr}`, tracerOf) : undefined;
  if (refusal) cause = `${refusal} (CRIU: ${quoted})`;
  // CRIU logs into the images directory: when that file system fills up, the log may end before
  // CRIU's error is written (seen with CRIU 3.17.1, and with 4.2.1 in both of two runs of
  // test/faults/criu-faults.test.ts's dump into a tmpfs filled mid-dump), or in the middle of it
  // ("page-xfer: Unable to spice data: No space", 1 dump in 20 into a 256 KiB tmpfs with CRIU
  // 4.2.1), so look at the file system itself.
  const free = code === 'ECRIU' ? freeBytes(dirname(logPath)) : undefined;
  if (free !== undefined && free < FULL_BELOW_BYTES) {
    code = 'ENOSPC';
    const cut = errors.length === 0 ? 'cut' : 'may have cut';
    cause = `${quoted}; No space left on device: the file system of ${dirname(logPath)} is full (${free} bytes free), which ${cut} CRIU's log short`;
  }
  return new AgentError(code, `${what} failed (${exit}): ${cause}`, {
    details: {
      logPath,
      args: run.args,
      exitCode: run.exitCode,
      signal: run.signal ?? null,
      errors: errors.slice(0, 50),
      durationMs: run.durationMs,
      ...(mismatch ? { mismatch } : {}),
      ...(refusal ? { refusal } : {}),
    },
  });
}

/** `: CRIU said "..."` with the first error lines of its log, or '' when there are none. */
async function ownErrors(logPath: string): Promise<string> {
  const errors = criuErrorLines((await readLogTail(logPath)) ?? '');
  return errors.length > 0 ? `: CRIU said "${errors.slice(0, 2).join(' | ')}"` : '';
}

const tracerOf: TracerLookup = (pid) => {
  const tracer = readTracerPid(pid);
  if (!tracer) return undefined;
  return { pid: tracer, comm: readProcStat(tracer)?.comm ?? 'unknown' };
};

// Less free space than this where CRIU writes counts as a full file system.
const FULL_BELOW_BYTES = 64 * 1024;

function freeBytes(dir: string): number | undefined {
  try {
    const fs = statfsSync(dir);
    return fs.bavail * fs.bsize;
  } catch {
    return undefined;
  }
}
