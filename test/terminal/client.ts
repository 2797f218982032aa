// A test's own client of the attach protocol (src/terminal/frames.ts), written against the bytes
// on the wire rather than agentctl's code: the HTTP Upgrade on the agent's socket, then frames.

import { request } from 'node:http';
import type { Socket } from 'node:net';
import { DETACH, EVENT, frame, FrameReader, INPUT, OUTPUT, resizeFrame } from '../../src/terminal/index.js';
import { join } from 'node:path';
import type { IPty } from 'node-pty';
import { CGEXEC, waitUntil, workload, type Lab, type TestCgroup } from '../helpers/lab.js';
import type { Json } from '../helpers/json.js';

export interface Attached {
  readonly conn: Socket;
  /** Every byte of output so far, as text. */
  output(): string;
  readonly events: Json[];
  type(text: string): void;
  resize(cols: number, rows: number): void;
  detach(): void;
  /** Waits until the output (from `from` on) matches. */
  waitFor(pattern: RegExp, from?: number, timeoutMs?: number): Promise<RegExpExecArray>;
  readonly closed: Promise<void>;
}

/** The refusal: status and JSON body. */
export interface Refused {
  readonly status: number;
  readonly body: Json;
}

export function attach(socket: string, query: Record<string, string>, headers: Record<string, string> = {}): Promise<Attached | Refused> {
  const path = `/v1/cgroups/terminal?${new URLSearchParams(query).toString()}`;
  return new Promise((resolve, reject) => {
    const req = request({
      socketPath: socket,
      method: 'GET',
      path,
      headers: { Connection: 'Upgrade', Upgrade: 'agentd-terminal/1', ...headers },
    });
    req.on('upgrade', (_res, conn, head) => {
      let text = '';
      const events: Json[] = [];
      const reader = new FrameReader((type, payload) => {
        if (type === OUTPUT) text += payload.toString('utf8');
        else if (type === EVENT) events.push(JSON.parse(payload.toString('utf8')));
      });
      conn.on('data', (chunk: Buffer) => reader.push(chunk));
      if (head.length) reader.push(head);
      const closed = new Promise<void>((r) => conn.on('close', () => r()));
      conn.on('error', () => undefined);
      resolve({
        conn,
        output: () => text,
        events,
        type: (t) => conn.write(frame(INPUT, t)),
        resize: (cols, rows) => conn.write(resizeFrame({ cols, rows })),
        detach: () => conn.end(frame(DETACH)),
        async waitFor(pattern, from = 0, timeoutMs = 20_000) {
          let match: RegExpExecArray | null = null;
          await waitUntil(
            `${pattern} in the terminal's output (so far: ${JSON.stringify(text.slice(from).slice(-300))})`,
            () => {
              match = pattern.exec(text.slice(from));
              return match !== null;
            },
            timeoutMs,
          ).catch((err: Error) => {
            throw new Error(`${err.message}; so far: ${JSON.stringify(text.slice(from).slice(-300))}`);
          });
          return match!;
        },
        closed,
      });
    });
    req.on('response', (res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (c: string) => (body += c));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body: body ? JSON.parse(body) : undefined }));
    });
    req.on('error', reject);
    req.end();
  });
}

export function isAttached(value: Attached | Refused): value is Attached {
  return 'conn' in value;
}

const JOB_ENV = { PATH: '/usr/bin:/bin', HOME: '/root', TERM: 'dumb', LANG: 'C.UTF-8' };

/**
 * The shell job the attach tests checkpoint: bash reading lines (fixtures/workloads/line-reader.sh)
 * on an 80x24 node-pty terminal of its own, in `cgroup`, ready; with `firstLine`, that line typed
 * and answered already. The caller kills the terminal.
 */
export async function startLineReader(lab: Lab, cgroup: TestCgroup, firstLine?: string): Promise<{ pid: number; pty: IPty }> {
  const { spawn } = await import('node-pty');
  const pty = spawn(CGEXEC, [join(cgroup.dir, 'cgroup.procs'), 'bash', workload('line-reader.sh')], { cols: 80, rows: 24, env: JOB_ENV });
  lab.track(pty.pid);
  let output = '';
  pty.onData((d) => (output += d));
  await waitUntil('the job to be ready', () => output.includes('ready'), 20_000);
  if (firstLine !== undefined) {
    pty.write(`${firstLine}\r`);
    await waitUntil('the job to answer', () => output.includes(`line 1: ${firstLine}`), 20_000);
  }
  const [pid] = await lab.waitForProcesses(cgroup, 1);
  return { pid, pty };
}
