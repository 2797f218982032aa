// agentctl's side of a terminal agentd holds (src/daemon/attach.ts): the HTTP Upgrade to
// agentd-terminal/1 on the agent's socket, then the user's terminal in raw mode connected to the
// job's: keys go to the job, its output comes back, a window size change (SIGWINCH, which Node
// reports as the 'resize' of stdout) is passed on. Ctrl-] detaches: agentctl leaves, the job runs on
// with agentd holding its terminal, and `agentctl attach <cgroup>` gets it back.

import { request as httpRequest } from 'node:http';
import { createRequire } from 'node:module';
import type { Socket } from 'node:net';
import { DETACH, EVENT, frame, FrameReader, INPUT, OUTPUT, PROTOCOL, resizeFrame, type TerminalEvent } from '../terminal/frames.js';
import { agentError, unreachable } from './client.js';
import { withQuery } from './context.js';

/** The detach key: Ctrl-] (the byte 0x1d), as telnet has it. */
export const DETACH_KEY = 0x1d;
export const DETACH_KEY_NAME = 'Ctrl-]';

export interface AttachTarget {
  readonly cgroup: string;
  readonly hierarchy?: 'v1' | 'v2';
  readonly takeOver?: boolean;
}

/** How a session ended: the user detached, the job ended, or agentd closed it with the job running on. */
export type AttachOutcome =
  | { readonly how: 'detached'; readonly name: string }
  | { readonly how: 'ended'; readonly message: string; readonly exitCode?: number; readonly signal?: number }
  | { readonly how: 'closed'; readonly message: string };

/**
 * Output post-processing of the user's terminal, off while attached and back on after. The job's own
 * pty has already turned its "\n" into "\r\n"; Node's raw mode keeps ONLCR on, so the user's
 * terminal would make that "\r\r\n" (and a bare "\n" of a full-screen program a new line).
 */
function outputProcessing(on: boolean, childProcess: typeof import('node:child_process')): void {
  childProcess.spawnSync('stty', [on ? 'opost' : '-opost'], { stdio: ['inherit', 'ignore', 'ignore'] });
}

function say(text: string): void {
  // In raw mode a bare \n does not return the carriage: every message starts on a clean line.
  process.stderr.write(`\r\nagentctl: ${text}\r\n`);
}

/** Opens the upgraded connection; rejects with the agent's own error when it refuses. */
function connect(socket: string, target: AttachTarget): Promise<{ conn: Socket; head: Buffer }> {
  const size = process.stdout.isTTY ? { cols: String(process.stdout.columns), rows: String(process.stdout.rows) } : {};
  const path = withQuery('/v1/cgroups/terminal', {
    cgroup: target.cgroup,
    hierarchy: target.hierarchy,
    ...size,
    takeOver: target.takeOver ? 'true' : undefined,
  });
  return new Promise((resolve, reject) => {
    const req = httpRequest({ socketPath: socket, method: 'GET', path, headers: { Connection: 'Upgrade', Upgrade: PROTOCOL } });
    req.on('upgrade', (_res, conn, head) => resolve({ conn, head }));
    req.on('response', (res) => {
      let text = '';
      res.setEncoding('utf8');
      res.on('data', (chunk: string) => (text += chunk));
      res.on('end', () => {
        let body: unknown;
        try {
          body = JSON.parse(text);
        } catch {
          body = undefined;
        }
        reject(agentError(res.statusCode ?? 500, body));
      });
    });
    req.on('error', (err) => reject(unreachable(socket, err)));
    req.end();
  });
}

/**
 * Attaches the user's terminal to the job's until one side ends it. Refusals (no such terminal,
 * attached elsewhere) reject with the agent's error before the user's terminal is touched.
 */
export async function attachTerminal(
  socket: string,
  target: AttachTarget,
  onAttached?: (event: Extract<TerminalEvent, { type: 'attached' }>) => void,
): Promise<AttachOutcome> {
  const { conn, head } = await connect(socket, target);
  // Loaded here, not at the top: every agentctl command would pay for it (docs/bench.md, "agentctl
  // start-up"); with require, not import(), as in ./commands/archive.ts.
  const childProcess = createRequire(import.meta.url)('node:child_process') as typeof import('node:child_process');
  const stdin = process.stdin;
  const raw = stdin.isTTY === true;
  let name = target.cgroup;
  return new Promise<AttachOutcome>((resolve) => {
    let outcome: AttachOutcome | undefined;
    const finish = (result: AttachOutcome): void => {
      if (outcome) return;
      outcome = result;
      stdin.off('data', onInput);
      stdin.off('end', onInputEnd);
      process.stdout.off('resize', onResize);
      for (const signal of ['SIGHUP', 'SIGTERM'] as const) process.off(signal, onSignal);
      if (raw) {
        stdin.setRawMode(false);
        if (process.stdout.isTTY) outputProcessing(true, childProcess);
      }
      stdin.pause();
      conn.end();
      conn.destroy();
      resolve(result);
    };
    const detach = (): void => {
      if (!conn.destroyed) conn.write(frame(DETACH));
      finish({ how: 'detached', name });
    };
    const onInput = (chunk: Buffer): void => {
      const at = chunk.indexOf(DETACH_KEY);
      const before = at < 0 ? chunk : chunk.subarray(0, at);
      if (before.length > 0 && !conn.destroyed) conn.write(frame(INPUT, before));
      if (at >= 0) detach();
    };
    // Input that ends (a pipe, not a terminal) detaches: the job keeps its terminal and runs on.
    const onInputEnd = (): void => detach();
    const onResize = (): void => {
      if (!conn.destroyed) conn.write(resizeFrame({ cols: process.stdout.columns, rows: process.stdout.rows }));
    };
    // A hung-up or stopped agentctl leaves the job as a detach does.
    const onSignal = (): void => detach();

    const reader = new FrameReader((type, payload) => {
      if (type === OUTPUT) {
        process.stdout.write(payload);
        return;
      }
      if (type !== EVENT) return;
      const event = JSON.parse(payload.toString('utf8')) as TerminalEvent;
      if (event.type === 'attached') {
        name = `${event.hierarchy}:${event.cgroup}`;
        onAttached?.(event);
      } else if (event.type === 'ended') {
        finish({ how: 'ended', message: event.message, exitCode: event.exitCode, signal: event.signal });
      } else if (event.type === 'closed') {
        finish({ how: 'closed', message: event.message });
      }
    });
    conn.on('data', (chunk: Buffer) => {
      try {
        reader.push(chunk);
      } catch (err) {
        finish({ how: 'closed', message: `agentd sent a broken frame (${(err as Error).message}); the job runs on` });
      }
    });
    conn.on('error', () => undefined);
    conn.on('close', () =>
      finish({ how: 'closed', message: `the connection to agentd closed; the job may still run (agentctl attach ${name} tries again)` }),
    );

    if (raw) {
      stdin.setRawMode(true);
      if (process.stdout.isTTY) outputProcessing(false, childProcess);
    }
    stdin.on('data', onInput);
    stdin.on('end', onInputEnd);
    stdin.resume();
    process.stdout.on('resize', onResize);
    for (const signal of ['SIGHUP', 'SIGTERM'] as const) process.on(signal, onSignal);
    if (head.length > 0) conn.emit('data', head);
  });
}

/** Reports how the session ended on stderr; returns agentctl's exit status for it. */
export function reportOutcome(outcome: AttachOutcome): number {
  if (outcome.how === 'detached') {
    say(`detached from ${outcome.name}; the job runs on, agentd holds its terminal: agentctl attach ${outcome.name} gets it back`);
    return 0;
  }
  if (outcome.how === 'closed') {
    say(outcome.message);
    return 1;
  }
  say(outcome.message);
  return 0;
}
