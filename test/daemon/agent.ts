// Test helpers shared by the daemon and CLI tests: a real agentd process on a private socket, run
// and images directory (never /run/agentd), raw HTTP over its socket, and agentctl as a process.

import { spawn, type ChildProcess, type SpawnOptions } from 'node:child_process';
import { chmodSync, existsSync, mkdirSync } from 'node:fs';
import { request as httpRequest, type IncomingHttpHeaders } from 'node:http';
import { join } from 'node:path';
import { after, before } from 'node:test';
import { Lab, REPO_ROOT } from '../helpers/lab.js';
import type { Json } from '../helpers/json.js';

export const AGENTD = join(REPO_ROOT, 'bin', 'agentd');
/** The launcher with agentd's node settings (what setup's launcher and the bench start). */
export const AGENTD_RUN = join(REPO_ROOT, 'bin', 'agentd-run');
export const AGENTCTL = join(REPO_ROOT, 'bin', 'agentctl');

export interface Agent {
  readonly child: ChildProcess;
  readonly pid: number;
  readonly socket: string;
  readonly runDir: string;
  readonly imagesDir: string;
  readonly dir: string;
  /** Everything the agent logged so far. */
  log(): string;
  /** Resolves with the exit code (or signal name) once the process has exited. */
  readonly exited: Promise<number | string>;
  /** SIGTERM, then the exit code. */
  stop(): Promise<number | string>;
}

export interface AgentOptions {
  readonly args?: string[];
  readonly env?: NodeJS.ProcessEnv;
  /** Spawns exactly this command instead of `node bin/agentd` (socket activation wrappers). */
  readonly command?: { file: string; args: string[] };
  readonly stdio?: SpawnOptions['stdio'];
  /** Wait until /v1/health answers; default true. */
  readonly waitReady?: boolean;
  /** A directory to use (its socket, run and images paths inside it); default a new temp dir. */
  readonly dir?: string;
}

/** Paths of one agent's files, in a directory others can traverse (so socket modes are what count). */
export function agentPaths(lab: Lab, dir?: string): { dir: string; socket: string; runDir: string; imagesDir: string } {
  const base = dir ?? lab.tempDir('agent');
  chmodSync(base, 0o755);
  return { dir: base, socket: join(base, 'agentd.sock'), runDir: join(base, 'run'), imagesDir: join(base, 'images') };
}

/**
 * An agent's options for its own files: its socket, run and images directories, and (unless `extra`
 * names them) a signing key and trusted keys of its own, so that no test agent makes or reads the
 * machine's /var/lib/agentd/signing-key or trusts what /etc/agentd/trusted-keys holds.
 */
export function agentArgs(
  paths: { dir: string; socket: string; runDir: string; imagesDir: string },
  extra: readonly string[] = [],
): string[] {
  const args = ['--socket', paths.socket, '--run-dir', paths.runDir, '--images-dir', paths.imagesDir, '--log-level', 'debug'];
  if (!extra.includes('--key')) args.push('--key', join(paths.dir, 'signing-key'));
  if (!extra.includes('--trusted-keys')) args.push('--trusted-keys', join(paths.dir, 'trusted-keys'));
  return [...args, ...extra];
}

export async function startAgent(lab: Lab, options: AgentOptions = {}): Promise<Agent> {
  const paths = agentPaths(lab, options.dir);
  mkdirSync(paths.dir, { recursive: true });
  const args = agentArgs(paths, options.args);
  const command = options.command ?? { file: process.execPath, args: [AGENTD, ...args] };
  // A clean environment: nothing systemd-like leaks in from whoever runs the tests.
  const env: NodeJS.ProcessEnv = { PATH: process.env.PATH, HOME: process.env.HOME, ...options.env };
  const child = lab.spawn(command.file, command.args, { stdio: options.stdio ?? ['ignore', 'pipe', 'pipe'], env });
  let logged = '';
  child.stdout?.on('data', (d: Buffer) => (logged += d.toString()));
  child.stderr?.on('data', (d: Buffer) => (logged += d.toString()));
  const exited = new Promise<number | string>((resolve) => child.on('exit', (code, signal) => resolve(code ?? signal ?? -1)));
  const agent: Agent = {
    child,
    pid: child.pid!,
    ...paths,
    log: () => logged,
    exited,
    async stop() {
      if (child.exitCode === null && child.signalCode === null) child.kill('SIGTERM');
      return exited;
    },
  };
  if (options.waitReady !== false) await waitHealthy(agent);
  return agent;
}

/**
 * One agent shared by all tests of a file: the file's Lab, an agent started in `before` and
 * stopped in `after` (also when a test failed, and before the lab removes its cgroups, which the
 * agent may still hold). Tests are defined before any hook runs, so the agent is returned as a
 * stand-in that reaches the started agent at each use; using it outside the tests (at load time)
 * throws rather than reading from an agent that does not exist yet. `options` may be a function of
 * the lab, called in `before`, for options that name the lab's own directories.
 */
export function withAgent(label: string, options: AgentOptions | ((lab: Lab) => AgentOptions) = {}): { lab: Lab; agent: Agent } {
  const lab = new Lab(label);
  let started: Agent | undefined;
  before(async () => {
    started = await startAgent(lab, typeof options === 'function' ? options(lab) : options);
  });
  after(async () => {
    await started?.stop();
    await lab.cleanup();
  });
  const current = (): Agent => {
    if (!started) throw new Error(`the agent of ${label} is used before its before() hook started it`);
    return started;
  };
  const agent = new Proxy({} as Agent, {
    get: (_, key) => Reflect.get(current(), key),
    has: (_, key) => Reflect.has(current(), key),
    ownKeys: () => Reflect.ownKeys(current()),
    getOwnPropertyDescriptor: (_, key) => Reflect.getOwnPropertyDescriptor(current(), key),
  });
  return { lab, agent };
}

// A limit on waiting, not a timing assertion: under software emulation (the VM suite) an agent
// start that probes a missing CRIU took over 20 s.
export async function waitHealthy(agent: Agent, timeoutMs = 90_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  let exitedWith: number | string | undefined;
  void agent.exited.then((code) => (exitedWith = code));
  for (;;) {
    if (exitedWith !== undefined) throw new Error(`agentd exited (${exitedWith}) before it was ready:\n${agent.log()}`);
    if (existsSync(agent.socket)) {
      try {
        const res = await api(agent.socket, 'GET', '/v1/health');
        if (res.status === 200) return;
      } catch {
        // not listening yet
      }
    }
    if (Date.now() > deadline) throw new Error(`agentd did not become healthy on ${agent.socket}:\n${agent.log()}`);
    await sleep(20);
  }
}

export function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}

export interface ApiResponse {
  readonly status: number;
  readonly headers: IncomingHttpHeaders;
  readonly text: string;
  /** The parsed JSON body, when it is JSON. */
  readonly body: Json;
}

export interface ApiOptions {
  /** A JSON value, or a raw string/Buffer sent as is. */
  readonly body?: unknown;
  readonly headers?: Record<string, string | number>;
  /** Chunks written with pauses, without Content-Length (chunked encoding). */
  readonly chunks?: Buffer[];
  /** Called with each complete NDJSON line as it arrives. */
  readonly onLine?: (line: Json) => void;
}

/** One raw HTTP request over the Unix socket. */
export function api(socket: string, method: string, path: string, options: ApiOptions = {}): Promise<ApiResponse> {
  const raw =
    options.body === undefined
      ? undefined
      : typeof options.body === 'string' || Buffer.isBuffer(options.body)
        ? options.body
        : JSON.stringify(options.body);
  const headers: Record<string, string | number> = { ...options.headers };
  if (raw !== undefined) {
    headers['Content-Type'] ??= 'application/json';
    headers['Content-Length'] ??= Buffer.byteLength(raw);
  }
  return new Promise((resolve, reject) => {
    const req = httpRequest({ socketPath: socket, method, path, headers }, (res) => {
      let text = '';
      res.setEncoding('utf8');
      res.on('data', (chunk: string) => {
        const before = text;
        text += chunk;
        if (options.onLine) {
          const lines = text.split('\n');
          const done = before.split('\n').length - 1;
          for (const line of lines.slice(done, -1)) if (line) options.onLine(JSON.parse(line));
        }
      });
      res.on('end', () => {
        let body: unknown;
        try {
          body = text ? JSON.parse(text) : undefined;
        } catch {
          body = undefined;
        }
        resolve({ status: res.statusCode ?? 0, headers: res.headers, text, body });
      });
      res.on('error', reject);
    });
    req.on('error', reject);
    if (options.chunks) {
      void (async () => {
        for (const chunk of options.chunks!) {
          if (!req.write(chunk)) await new Promise((r) => req.once('drain', r));
        }
        req.end();
      })().catch(reject);
    } else {
      req.end(raw);
    }
  });
}

/** Lines of an NDJSON body. */
export function ndjson(text: string): Json[] {
  return text
    .split('\n')
    .filter(Boolean)
    .map((line) => JSON.parse(line));
}

export interface CliResult {
  readonly code: number | null;
  readonly stdout: string;
  readonly stderr: string;
}

/**
 * Runs `file ARGV` (an argument array, never a shell) with stdin closed, and resolves with its exit
 * code and everything it wrote, once its output has closed (not at 'exit', which can come first).
 */
export function runCollecting(file: string, argv: readonly string[], options: Omit<SpawnOptions, 'stdio'> = {}): Promise<CliResult> {
  return new Promise((resolve, reject) => {
    const child = spawn(file, argv, { ...options, stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout!.on('data', (d: Buffer) => (stdout += d.toString()));
    child.stderr!.on('data', (d: Buffer) => (stderr += d.toString()));
    child.on('error', reject);
    child.on('close', (code) => resolve({ code, stdout, stderr }));
  });
}

/** Runs bin/agentctl with an argument array (never a shell). */
export function agentctl(args: string[], options: { env?: NodeJS.ProcessEnv; prefix?: string[] } = {}): Promise<CliResult> {
  const [file, ...pre] = options.prefix ?? [process.execPath];
  const argv = options.prefix ? [...pre, process.execPath, AGENTCTL, ...args] : [AGENTCTL, ...args];
  return runCollecting(file, argv, { env: { PATH: process.env.PATH, HOME: process.env.HOME, ...options.env } });
}

/** agentctl ARGS on a 120x20 pseudo-terminal (node-pty); resolves with its exit code and everything it drew. */
export async function agentctlOnPty(socket: string, args: readonly string[]): Promise<{ code: number; output: string }> {
  const { spawn } = await import('node-pty');
  return new Promise((resolve) => {
    const term = spawn(process.execPath, [AGENTCTL, '--socket', socket, ...args], {
      cols: 120,
      rows: 20,
      env: { PATH: process.env.PATH ?? '', TERM: 'xterm' },
    });
    let output = '';
    term.onData((d) => (output += d));
    term.onExit(({ exitCode }) => resolve({ code: exitCode, output }));
  });
}
