// Restoring a tree that was dumped with --shell-job (it ran on a terminal).
//
// Measured with CRIU 4.1.1: such a restore needs a terminal to hand the tree ("Don't have tty to
// inherit session from" otherwise), so CRIU runs on a new pty. It must stay in the foreground (no
// -d): the restored root becomes its child, CRIU exits when the root does, and the pty lives as
// long as CRIU. Restored with -d instead, CRIU exits at once, the pty is closed behind it and the
// tree is left writing to a deleted /dev/pts entry. The restored root gets fds 0-2 on the new pty
// but no controlling terminal (tty_nr 0), in its own session as at dump time.

import { rm } from 'node:fs/promises';
import type { IPty } from 'node-pty';
import { AgentError } from '../errors/index.js';
import { readPidFile, restoreArgs, restoreFiles, withYardCleanup, type CriuRestoreOptions } from './restore.js';
import { criuEnv, criuFailure } from './run.js';

export interface CriuTerminalRestoreOptions extends Omit<CriuRestoreOptions, 'shellJob'> {
  readonly cols?: number;
  readonly rows?: number;
}

export interface CriuTerminalRestore {
  /** The restored tree's root pid. */
  readonly pid: number;
  /** CRIU, in the foreground on the new pty: the root's parent until the root exits. */
  readonly criuPid: number;
  /** The new pty's master side: the tree's output arrives here, input and resizes go here. */
  readonly terminal: IPty;
  /** Resolves when CRIU exits, i.e. when the restored root has exited. */
  readonly exited: Promise<{ exitCode: number; signal?: number }>;
  readonly logPath: string;
  readonly args: readonly string[];
  readonly durationMs: number;
}

// How often to look for the pidfile CRIU writes once the tree is restored (~0.15 s for a small tree).
const POLL_MS = 5;

/**
 * Restores a --shell-job tree inside a new pty and resolves once it runs (CRIU has written its
 * pidfile). Errors as runCriu: ECRIU/ENOSPC quoting the log, ETIMEDOUT, EINTR (CRIU killed).
 */
export async function startCriuRestoreOnTerminal(opts: CriuTerminalRestoreOptions): Promise<CriuTerminalRestore> {
  const { workDir, pidFile, logPath } = restoreFiles(opts);
  const args = [...restoreArgs({ ...opts, shellJob: true }, pidFile, false), ...(opts.extraArgs ?? [])];
  const what = `criu restore (on a terminal) from ${opts.imagesDir}`;
  if (opts.signal?.aborted) throw new AgentError('EINTR', `${what} was cancelled before it started`, { details: { logPath, args } });
  await rm(pidFile, { force: true }).catch(() => undefined);

  // node-pty is native code: load it only when a terminal restore is asked for.
  const { spawn } = await import('node-pty');
  const started = performance.now();
  let terminal: IPty;
  try {
    terminal = spawn(opts.criuPath, args, {
      name: 'xterm',
      cols: opts.cols ?? 80,
      rows: opts.rows ?? 24,
      cwd: workDir,
      env: criuEnv(opts.useBreakpoints) as Record<string, string>,
    });
  } catch (err) {
    throw new AgentError('ECRIU', `${what}: could not run ${opts.criuPath}: ${(err as Error).message}`, {
      cause: err,
      details: { logPath, args },
    });
  }
  let exit: { exitCode: number; signal?: number } | undefined;
  const exited = new Promise<{ exitCode: number; signal?: number }>((resolve) => {
    terminal.onExit((e) => {
      exit = e;
      resolve(e);
    });
  });
  let output = '';
  const collect = terminal.onData((d) => {
    if (output.length < 65536) output += d; // CRIU's own complaints before the tree takes over
  });

  let stop: 'timeout' | 'abort' | undefined;
  const kill = (why: 'timeout' | 'abort'): void => {
    stop ??= why;
    try {
      // CRIU leads the pty's session and process group; the group also holds a half-restored tree.
      process.kill(-terminal.pid, 'SIGKILL');
    } catch {
      try {
        terminal.kill('SIGKILL');
      } catch {
        // exited meanwhile
      }
    }
  };
  const onAbort = (): void => kill('abort');
  opts.signal?.addEventListener('abort', onAbort, { once: true });
  const timer = opts.timeoutMs !== undefined ? setTimeout(() => kill('timeout'), opts.timeoutMs) : undefined;
  try {
    return await withYardCleanup(workDir, () => waitForTree());
  } finally {
    clearTimeout(timer);
    opts.signal?.removeEventListener('abort', onAbort);
    collect.dispose();
  }

  async function waitForTree(): Promise<CriuTerminalRestore> {
    for (;;) {
      const pid = await readPidFile(pidFile);
      if (pid !== undefined && !stop) {
        return { pid, criuPid: terminal.pid, terminal, exited, logPath, args, durationMs: Math.round(performance.now() - started) };
      }
      if (stop) {
        await Promise.race([exited, new Promise((r) => setTimeout(r, 2_000))]);
        const details = { logPath, args, criuPid: terminal.pid, criuExited: exit !== undefined };
        if (stop === 'timeout')
          throw new AgentError('ETIMEDOUT', `${what} did not finish within ${opts.timeoutMs} ms; killed it (log: ${logPath})`, { details });
        throw new AgentError('EINTR', `${what} was cancelled; killed it (log: ${logPath})`, { details });
      }
      if (exit !== undefined) {
        // CRIU ended without a pidfile: a failed restore (or a tree that exited at once, exit 0).
        throw await criuFailure(what, logPath, { exitCode: exit.exitCode, signal: exit.signal, stderr: output, args });
      }
      await new Promise((r) => setTimeout(r, POLL_MS));
    }
  }
}
