// A real agentd for the benchmark (bin/agentd on a temporary socket, run and images directory, its
// log in a file), and the HTTP requests the benchmark sends it over the Unix socket.

import { closeSync, existsSync, openSync, readFileSync } from 'node:fs';
import { Agent as HttpAgent, request } from 'node:http';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import type { ChildProcess } from 'node:child_process';
import type { BenchLab } from './lab.js';
import { REPO_ROOT } from './native.js';

export const AGENTD_RUN = join(REPO_ROOT, 'bin', 'agentd-run');

export interface RunningAgent {
  readonly pid: number;
  readonly socket: string;
  readonly runDir: string;
  readonly imagesDir: string;
  readonly logFile: string;
  /** VmRSS of the agent, in bytes. */
  rss(): number;
  /** SIGTERM, wait for the exit (SIGKILL after 10 s). */
  stop(): Promise<void>;
}

export interface AgentOptions {
  /** Where checkpoint images go; default a directory beside the socket. */
  readonly imagesDir?: string;
}

export async function startAgent(lab: BenchLab, options: AgentOptions = {}): Promise<RunningAgent> {
  const dir = lab.tempDir('agent');
  const socket = join(dir, 'agentd.sock');
  const runDir = join(dir, 'run');
  const imagesDir = options.imagesDir ?? join(dir, 'images');
  const logFile = join(dir, 'agentd.log');
  const log = openSync(logFile, 'a');
  // The agent's default log level (info: one audit line per mutating request), into a file as
  // journald would take it; a clean environment so nothing systemd-like leaks in.
  const keys = ['--key', join(dir, 'signing-key'), '--trusted-keys', join(dir, 'trusted-keys')];
  // Through bin/agentd-run, as setup's launcher starts it: the node settings agentd's memory is
  // measured with are written there only.
  const child: ChildProcess = lab.spawn(AGENTD_RUN, ['--socket', socket, '--run-dir', runDir, '--images-dir', imagesDir, ...keys], {
    stdio: ['ignore', log, log],
    env: { PATH: process.env.PATH, HOME: process.env.HOME, AGENTD_NODE: process.execPath },
  });
  closeSync(log);
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  let gone = false;
  void exited.then(() => (gone = true));
  const agent: RunningAgent = {
    pid: child.pid!,
    socket,
    runDir,
    imagesDir,
    logFile,
    rss: () => residentBytes(child.pid!),
    async stop() {
      if (gone) return;
      child.kill('SIGTERM');
      const timer = setTimeout(() => child.kill('SIGKILL'), 10_000);
      await exited;
      clearTimeout(timer);
    },
  };
  const deadline = Date.now() + 30_000;
  for (;;) {
    if (gone) throw new Error(`agentd exited before it was ready:\n${readFileSync(logFile, 'utf8')}`);
    if (existsSync(socket)) {
      try {
        if ((await call(socket, 'GET', '/v1/health')).status === 200) return agent;
      } catch {
        // not listening yet
      }
    }
    if (Date.now() > deadline) {
      await agent.stop();
      throw new Error(`agentd did not answer on ${socket} within 30 s:\n${readFileSync(logFile, 'utf8')}`);
    }
    await new Promise((r) => setTimeout(r, 20));
  }
}

export function residentBytes(pid: number): number {
  const kb = /^VmRSS:\s+(\d+) kB/m.exec(readFileSync(`/proc/${pid}/status`, 'utf8'))?.[1];
  if (kb === undefined) throw new Error(`no VmRSS for pid ${pid}`);
  return Number(kb) * 1024;
}

export interface CallResult {
  readonly status: number;
  // eslint-disable-next-line @typescript-eslint/no-explicit-any -- a parsed JSON reply: the bench reads its fields and fails loudly when one is missing
  readonly body: any;
  /** From just before the request was started to the end of the reply, in milliseconds. */
  readonly ms: number;
}

/**
 * One request, JSON in and out. Without `agent`, a new connection per request, closed afterwards,
 * as agentctl does; with one, that agent's (kept-alive) connections.
 */
export function call(socket: string, method: string, path: string, body?: unknown, agent?: HttpAgent): Promise<CallResult> {
  const raw = body === undefined ? undefined : JSON.stringify(body);
  const headers: Record<string, string | number> = {};
  if (raw !== undefined) {
    headers['Content-Type'] = 'application/json';
    headers['Content-Length'] = Buffer.byteLength(raw);
  }
  return new Promise((resolve, reject) => {
    const started = performance.now();
    const req = request({ socketPath: socket, method, path, headers, agent: agent ?? false }, (res) => {
      let text = '';
      res.setEncoding('utf8');
      res.on('data', (chunk: string) => (text += chunk));
      res.on('end', () => {
        const ms = performance.now() - started;
        let parsed: unknown;
        try {
          parsed = text ? JSON.parse(text) : undefined;
        } catch {
          parsed = text;
        }
        resolve({ status: res.statusCode ?? 0, body: parsed, ms });
      });
      res.on('error', reject);
    });
    req.on('error', reject);
    req.end(raw);
  });
}

/** Like call, but fails unless the status is the expected one. */
export async function callOk(
  socket: string,
  method: string,
  path: string,
  body?: unknown,
  agent?: HttpAgent,
  expect = 200,
): Promise<CallResult> {
  const result = await call(socket, method, path, body, agent);
  if (result.status !== expect) {
    throw new Error(`${method} ${path} answered ${result.status}: ${JSON.stringify(result.body).slice(0, 500)}`);
  }
  return result;
}
