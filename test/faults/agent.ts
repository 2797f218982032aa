// A real agentd for the fault suite: bin/agentd started on a temporary socket, run directory and
// image directory, its log kept, and an HTTP client for its Unix socket (plain JSON, NDJSON
// progress streams, and raw bytes for requests no well-behaved client would send).

import type { ChildProcess } from 'node:child_process';
import { existsSync, mkdirSync } from 'node:fs';
import { request } from 'node:http';
import { connect } from 'node:net';
import { join } from 'node:path';
import { AGENTCTL, AGENTD } from '../daemon/agent.js';
import { REPO_ROOT, type Lab } from '../helpers/lab.js';
import type { Json } from '../helpers/json.js';

export { AGENTCTL, AGENTD };
export const FAULT_FIXTURES = join(REPO_ROOT, 'fixtures', 'faults');

export interface AgentDirs {
  readonly socket: string;
  readonly runDir: string;
  readonly imagesDir: string;
}

/** Fresh paths under one temporary directory; agentd creates the run and image directories itself. */
export function agentDirs(lab: Lab, label = 'agent'): AgentDirs {
  const base = lab.tempDir(label);
  return { socket: join(base, 'agentd.sock'), runDir: join(base, 'run'), imagesDir: join(base, 'images') };
}

export interface StartOptions {
  /** A stand-in criu (fixtures/faults/fake-criu.sh); default: the real one, found by agentd. */
  readonly criu?: string;
  readonly env?: NodeJS.ProcessEnv;
  /** More agentd options, after the directories (e.g. --allow-images-dir DIR). */
  readonly args?: readonly string[];
  /** How long to wait for the socket; agentd probes CRIU and recovers first. */
  readonly readyTimeoutMs?: number;
}

export interface Reply {
  readonly status: number;
  readonly headers: Record<string, string | string[] | undefined>;
  readonly text: string;
  /** The body parsed as JSON, or undefined when it is not JSON. */
  readonly json: Json;
}

export interface StreamReply {
  readonly status: number;
  readonly progress: { stage: string; tree?: number; trees?: number; bytes?: number }[];
  /** The last line: {type:'result', status, result} or {type:'error', status, error}. */
  readonly final: Json;
}

const agents = new Set<Agent>();

/** SIGKILLs every agentd still running (an after() hook calls it, also when a test failed). */
export async function killAllAgents(): Promise<void> {
  await Promise.all([...agents].map((a) => a.kill()));
}

export class Agent {
  log = '';
  private exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
  private done = false;

  private constructor(
    readonly dirs: AgentDirs,
    readonly child: ChildProcess,
  ) {
    this.exited = new Promise((resolve) => child.once('exit', (code, signal) => resolve({ code, signal })));
    this.exited.then(() => {
      this.done = true;
      agents.delete(this);
    });
    const take = (chunk: Buffer) => (this.log += chunk.toString('utf8'));
    child.stdout?.on('data', take);
    child.stderr?.on('data', take);
    agents.add(this);
  }

  get pid(): number {
    return this.child.pid!;
  }

  get socket(): string {
    return this.dirs.socket;
  }

  get running(): boolean {
    return !this.done;
  }

  /** Starts agentd and waits until it says it is ready (it probes CRIU and recovers first). */
  static async start(lab: Lab, dirs: AgentDirs, options: StartOptions = {}): Promise<Agent> {
    const agent = Agent.spawn(lab, dirs, options);
    await agent.waitReady(options.readyTimeoutMs ?? 60_000);
    return agent;
  }

  /** Starts agentd without waiting for it: for tests that act while it starts. */
  static spawn(lab: Lab, dirs: AgentDirs, options: StartOptions = {}): Agent {
    mkdirSync(join(dirs.socket, '..'), { recursive: true });
    // Keys of its own beside its socket: no test agent makes or reads the machine's signing key.
    const own = join(dirs.socket, '..');
    const args = [AGENTD, '--socket', dirs.socket, '--run-dir', dirs.runDir, '--images-dir', dirs.imagesDir];
    if (!options.args?.includes('--key')) args.push('--key', join(own, 'signing-key'), '--trusted-keys', join(own, 'trusted-keys'));
    if (options.criu) args.push('--criu', options.criu);
    args.push(...(options.args ?? []));
    const child = lab.spawn(process.execPath, args, { stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, ...options.env } });
    return new Agent(dirs, child);
  }

  async waitReady(timeoutMs = 60_000): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    while (!/agentd ready/.test(this.log)) {
      if (this.done) throw new Error(`agentd exited before it was ready:\n${this.log}`);
      if (Date.now() > deadline) throw new Error(`agentd was not ready within ${timeoutMs} ms:\n${this.log}`);
      await sleep(20);
    }
    if (!existsSync(this.socket)) throw new Error(`agentd says ready but ${this.socket} is missing`);
  }

  /** SIGKILL, as the OOM killer or `kill -9` would; resolves once it is gone. */
  async kill(): Promise<void> {
    if (this.done) return;
    try {
      process.kill(this.pid, 'SIGKILL');
    } catch {
      // already gone
    }
    await this.exited;
  }

  /** SIGTERM, a clean stop; resolves with the exit code. */
  async stop(timeoutMs = 30_000): Promise<number | null> {
    if (this.done) return (await this.exited).code;
    process.kill(this.pid, 'SIGTERM');
    const timer = setTimeout(() => this.kill(), timeoutMs);
    const { code } = await this.exited;
    clearTimeout(timer);
    return code;
  }

  /** One request with a JSON body (or none); never throws for an HTTP error status. */
  request(method: string, path: string, body?: unknown, headers: Record<string, string> = {}): Promise<Reply> {
    const payload = body === undefined ? undefined : typeof body === 'string' || Buffer.isBuffer(body) ? body : JSON.stringify(body);
    return httpJson(
      this.socket,
      method,
      path,
      payload,
      payload === undefined ? headers : { 'Content-Type': 'application/json', ...headers },
    );
  }

  /** A checkpoint (or restore) with NDJSON progress; onProgress sees each line as it arrives. */
  stream(
    path: string,
    body: unknown,
    onProgress: (event: StreamReply['progress'][number]) => void = () => undefined,
  ): Promise<StreamReply> {
    return httpStream(this.socket, path, body, onProgress);
  }

  /** Whether agentd answers /v1/health with status ok within 5 s. */
  async health(): Promise<boolean> {
    try {
      const reply = await httpJson(this.socket, 'GET', '/v1/health', undefined, {}, 5000);
      return reply.status === 200 && reply.json?.status === 'ok';
    } catch {
      return false;
    }
  }

  /** Waits until the log matches. */
  async waitLog(pattern: RegExp, timeoutMs = 10_000): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    while (!pattern.test(this.log)) {
      if (Date.now() > deadline) throw new Error(`agentd's log never matched ${pattern}:\n${this.log}`);
      await sleep(20);
    }
  }
}

export function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

function parseJson(text: string): Json {
  try {
    return JSON.parse(text);
  } catch {
    return undefined;
  }
}

export function httpJson(
  socketPath: string,
  method: string,
  path: string,
  body?: string | Buffer,
  headers: Record<string, string> = {},
  timeoutMs = 120_000,
): Promise<Reply> {
  return new Promise((resolve, reject) => {
    const req = request({ socketPath, method, path, headers, agent: false }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('end', () => {
        const text = Buffer.concat(chunks).toString('utf8');
        resolve({ status: res.statusCode ?? 0, headers: res.headers, text, json: parseJson(text) });
      });
      res.on('error', reject);
    });
    req.on('error', reject);
    req.setTimeout(timeoutMs, () => req.destroy(new Error(`no answer to ${method} ${path} within ${timeoutMs} ms`)));
    req.end(body);
  });
}

function httpStream(socketPath: string, path: string, body: unknown, onProgress: (event: Json) => void): Promise<StreamReply> {
  return new Promise((resolve) => {
    const payload = JSON.stringify(body);
    const req = request(
      { socketPath, method: 'POST', path, agent: false, headers: { 'Content-Type': 'application/json', Accept: 'application/x-ndjson' } },
      (res) => {
        const progress: StreamReply['progress'] = [];
        let final: Json;
        let buffered = '';
        const line = (text: string) => {
          const value = parseJson(text);
          if (value?.type === 'progress') {
            progress.push(value);
            onProgress(value);
          } else if (value !== undefined) final = value;
        };
        res.setEncoding('utf8');
        res.on('data', (chunk: string) => {
          buffered += chunk;
          let nl;
          while ((nl = buffered.indexOf('\n')) >= 0) {
            line(buffered.slice(0, nl));
            buffered = buffered.slice(nl + 1);
          }
        });
        const finish = () => {
          if (buffered.trim()) line(buffered);
          resolve({ status: res.statusCode ?? 0, progress, final: final ?? (res.statusCode !== 200 ? undefined : { type: 'cut' }) });
        };
        res.on('end', finish);
        // A killed agentd ends the stream without a last line.
        res.on('aborted', finish);
        res.on('error', finish);
      },
    );
    // agentd killed before it answered: no status at all.
    req.on('error', (err) => resolve({ status: 0, progress: [], final: { type: 'cut', error: err.message } }));
    req.end(payload);
  });
}

/**
 * Sends bytes as they are and reads whatever comes back until the server closes or `timeoutMs`
 * passes: for requests that Node's own client refuses to build (NUL bytes, bad methods, lies in
 * Content-Length). Returns the parsed status line and body.
 */
export function rawRequest(
  socketPath: string,
  bytes: Buffer,
  timeoutMs = 15_000,
): Promise<{ status: number; text: string; json: Json; raw: string }> {
  return new Promise((resolve, reject) => {
    const socket = connect(socketPath);
    const chunks: Buffer[] = [];
    let settled = false;
    const finish = () => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      socket.destroy();
      const raw = Buffer.concat(chunks).toString('utf8');
      const status = Number(/^HTTP\/1\.[01] (\d{3})/.exec(raw)?.[1] ?? 0);
      const split = raw.indexOf('\r\n\r\n');
      let text = split >= 0 ? raw.slice(split + 4) : '';
      if (/\r\ntransfer-encoding: chunked/i.test(raw.slice(0, split))) text = unchunk(text);
      resolve({ status, text, json: parseJson(text), raw });
    };
    const timer = setTimeout(finish, timeoutMs);
    socket.on('data', (c: Buffer) => {
      chunks.push(c);
      if (complete(Buffer.concat(chunks).toString('latin1'))) finish();
    });
    socket.on('end', finish);
    socket.on('close', finish);
    // EPIPE while agentd has already answered and closed (a body it refused unread): read what came.
    socket.on('error', () => undefined);
    // The head first, then the body in small paced pieces, and no more once an answer has begun: agentd
    // answers a body it refuses (413) before it has all of it, then closes at once, and a client still
    // writing then gets EPIPE, on which Node drops the answer unread (Node's own http client loses it
    // about 1 time in 6 with a 1.5 MB body; curl waits for `100 Continue` and never does).
    const PIECE = 16 * 1024;
    const headEnd = bytes.indexOf('\r\n\r\n');
    const head = headEnd >= 0 ? headEnd + 4 : bytes.length;
    const send = async (): Promise<void> => {
      socket.write(bytes.subarray(0, head));
      if (head < bytes.length) await new Promise((r) => setTimeout(r, 20));
      for (let offset = head; offset < bytes.length && chunks.length === 0 && !socket.destroyed; offset += PIECE) {
        if (!socket.write(bytes.subarray(offset, offset + PIECE))) await new Promise((r) => socket.once('drain', r));
        await new Promise((r) => setImmediate(r));
      }
    };
    socket.once('connect', () => void send());
    void reject;
  });
}

/** Whether a raw response is complete (Content-Length reached), so we need not wait for a close. */
function complete(raw: string): boolean {
  const split = raw.indexOf('\r\n\r\n');
  if (split < 0) return false;
  const length = /\r\ncontent-length: *(\d+)/i.exec(raw.slice(0, split));
  if (length) return Buffer.byteLength(raw.slice(split + 4), 'latin1') >= Number(length[1]);
  return false;
}

function unchunk(text: string): string {
  let out = '';
  let rest = text;
  for (;;) {
    const nl = rest.indexOf('\r\n');
    if (nl < 0) return out;
    const size = parseInt(rest.slice(0, nl), 16);
    if (!size) return out;
    out += rest.slice(nl + 2, nl + 2 + size);
    rest = rest.slice(nl + 4 + size);
  }
}
