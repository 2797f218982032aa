// Shared by the fidelity tests: where Debian puts the programs they checkpoint (scripts/setup.sh
// installs them), a skip reason when one is missing, free loopback ports, and small clients
// (HTTP/1.1 over one connection, Redis's protocol) that talk to the programs from the test.

import { createServer, Socket } from 'node:net';
import { accessSync, constants, existsSync, readFileSync } from 'node:fs';
import { waitUntil } from '../helpers/lab.js';

/**
 * Absolute paths: root's PATH here may find a python3 of its own before Debian's, and the suite is
 * about the archive's programs, as the packages in scripts/setup.sh install them.
 */
export const PROGRAMS = {
  python3: '/usr/bin/python3',
  wget: '/usr/bin/wget',
  nginx: '/usr/sbin/nginx',
  redis: '/usr/bin/redis-server',
  xz: '/usr/bin/xz',
  strace: '/usr/bin/strace',
} as const;

export type Program = keyof typeof PROGRAMS;

/**
 * Why a test cannot run here (a program it needs is not installed), or false. For `skip`. Where the
 * machine is known to have them all (the VM guests set AGENTD_REQUIRE_PROGRAMS=1), a missing one
 * throws instead, so that the file fails rather than skips.
 */
export function missing(...names: Program[]): string | false {
  for (const name of names) {
    try {
      accessSync(PROGRAMS[name], constants.X_OK);
    } catch {
      const why = `${PROGRAMS[name]} is not installed (scripts/setup.sh installs it)`;
      if (process.env.AGENTD_REQUIRE_PROGRAMS === '1') throw new Error(`${why}, and AGENTD_REQUIRE_PROGRAMS=1 says it must be`);
      return why;
    }
  }
  return false;
}

/** A loopback port nobody listens on right now: the kernel picks it for a bind to port 0. */
export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const address = server.address();
      server.close(() => (typeof address === 'object' && address ? resolve(address.port) : reject(new Error('no port'))));
    });
  });
}

/** Whether something accepts a connection on 127.0.0.1:port. */
export function accepts(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = new Socket();
    socket.once('connect', () => {
      socket.destroy();
      resolve(true);
    });
    socket.once('error', () => resolve(false));
    socket.connect(port, '127.0.0.1');
  });
}

/** Waits until 127.0.0.1:port accepts connections. */
export async function waitListening(port: number, what: string, timeoutMs = 20_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await accepts(port))) {
    if (Date.now() > deadline) throw new Error(`${what} did not listen on 127.0.0.1:${port} within ${timeoutMs} ms`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

/** One HTTP/1.0 GET on a new connection: status and body. */
export function httpGet(port: number, path: string, timeoutMs = 10_000): Promise<{ status: number; body: Buffer }> {
  return new Promise((resolve, reject) => {
    const socket = new Socket();
    const chunks: Buffer[] = [];
    const timer = setTimeout(() => {
      socket.destroy();
      reject(new Error(`GET ${path} on port ${port}: no complete answer within ${timeoutMs} ms`));
    }, timeoutMs);
    socket.on('data', (d: Buffer) => chunks.push(d));
    socket.once('error', (err) => {
      clearTimeout(timer);
      reject(err);
    });
    socket.once('end', () => {
      clearTimeout(timer);
      const all = Buffer.concat(chunks);
      const head = all.indexOf('\r\n\r\n');
      const status = Number(/^HTTP\/1\.\d (\d{3})/.exec(all.toString('latin1', 0, 64))?.[1] ?? 0);
      resolve({ status, body: head < 0 ? Buffer.alloc(0) : all.subarray(head + 4) });
    });
    socket.connect(port, '127.0.0.1', () => socket.end(`GET ${path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n`));
  });
}

/** One HTTP/1.0 request sent in parts over one connection, and its whole response (the server closes). */
export class HalfRequest {
  readonly connected: Promise<void>;
  private readonly socket = new Socket();
  private readonly chunks: Buffer[] = [];
  private readonly ended: Promise<void>;

  constructor(port: number) {
    this.connected = new Promise((resolve, reject) => {
      this.socket.once('error', reject);
      this.socket.connect(port, '127.0.0.1', () => resolve());
    });
    this.socket.on('data', (d: Buffer) => this.chunks.push(d));
    this.ended = new Promise((resolve, reject) => {
      this.socket.once('end', () => resolve());
      this.socket.once('error', reject);
    });
  }

  send(text: string): void {
    this.socket.write(text);
  }

  async response(timeoutMs = 20_000): Promise<{ status: number; body: Buffer }> {
    let timer: NodeJS.Timeout | undefined;
    const limit = new Promise<never>((_, reject) => {
      timer = setTimeout(() => reject(new Error(`no complete response within ${timeoutMs} ms`)), timeoutMs);
    });
    try {
      await Promise.race([this.ended, limit]);
    } finally {
      clearTimeout(timer);
      this.socket.destroy();
    }
    const all = Buffer.concat(this.chunks);
    const head = all.indexOf('\r\n\r\n');
    const status = Number(/^HTTP\/1\.\d (\d{3})/.exec(all.toString('latin1', 0, 64))?.[1] ?? 0);
    return { status, body: head < 0 ? Buffer.alloc(0) : all.subarray(head + 4) };
  }
}

/**
 * A Redis connection speaking RESP: commands as arrays of bulk strings, one reply at a time.
 * Enough for SET, GET, MGET, DBSIZE; a reply is a string, a number, null or an array of them.
 */
export class RedisClient {
  private buffer = Buffer.alloc(0);
  private waiting: (() => void) | undefined;
  private failure: Error | undefined;

  private constructor(private readonly socket: Socket) {
    socket.on('data', (d: Buffer) => {
      this.buffer = Buffer.concat([this.buffer, d]);
      this.waiting?.();
    });
    const fail = (err: Error) => {
      this.failure = err;
      this.waiting?.();
    };
    socket.on('error', fail);
    socket.on('close', () => fail(new Error('redis closed the connection')));
  }

  static connect(port: number): Promise<RedisClient> {
    return new Promise((resolve, reject) => {
      const socket = new Socket();
      socket.once('error', reject);
      socket.connect(port, '127.0.0.1', () => {
        socket.off('error', reject);
        resolve(new RedisClient(socket));
      });
    });
  }

  /** Sends several commands at once and reads their replies in order. */
  async pipeline(commands: string[][]): Promise<unknown[]> {
    this.socket.write(commands.map(encode).join(''));
    const replies: unknown[] = [];
    for (let i = 0; i < commands.length; i++) replies.push(await this.reply());
    return replies;
  }

  async command(...args: string[]): Promise<unknown> {
    return (await this.pipeline([args]))[0];
  }

  close(): void {
    this.socket.destroy();
  }

  private async reply(): Promise<unknown> {
    for (;;) {
      const parsed = parse(this.buffer, 0);
      if (parsed) {
        this.buffer = this.buffer.subarray(parsed.end);
        return parsed.value;
      }
      if (this.failure) throw this.failure;
      await new Promise<void>((r) => (this.waiting = r));
      this.waiting = undefined;
    }
  }
}

function encode(args: string[]): string {
  return `*${args.length}\r\n${args.map((a) => `$${Buffer.byteLength(a)}\r\n${a}\r\n`).join('')}`;
}

function parse(buf: Buffer, at: number): { value: unknown; end: number } | undefined {
  const eol = buf.indexOf('\r\n', at);
  if (eol < 0) return undefined;
  const line = buf.toString('utf8', at + 1, eol);
  switch (buf[at]) {
    case 0x2b: // +
      return { value: line, end: eol + 2 };
    case 0x2d: // -
      return { value: new Error(line), end: eol + 2 };
    case 0x3a: // :
      return { value: Number(line), end: eol + 2 };
    case 0x24: {
      // $
      const n = Number(line);
      if (n < 0) return { value: null, end: eol + 2 };
      if (buf.length < eol + 2 + n + 2) return undefined;
      return { value: buf.toString('utf8', eol + 2, eol + 2 + n), end: eol + 2 + n + 2 };
    }
    case 0x2a: {
      // *
      const n = Number(line);
      const items: unknown[] = [];
      let end = eol + 2;
      for (let i = 0; i < n; i++) {
        const item = parse(buf, end);
        if (!item) return undefined;
        items.push(item.value);
        end = item.end;
      }
      return { value: items, end };
    }
    default:
      throw new Error(`unexpected redis reply ${JSON.stringify(line)}`);
  }
}

/** Threads of a process (entries of /proc/PID/task). */
export function threadCount(pid: number): number {
  return Number(/^Threads:\s+(\d+)/m.exec(readFileSync(`/proc/${pid}/status`, 'utf8'))?.[1] ?? 0);
}

/** Waits until no /proc/PID is left of these pids (a restored process is not our child: no exit event). */
export function waitAllGone(pids: readonly number[], what: string, timeoutMs = 60_000): Promise<void> {
  return waitUntil(what, () => pids.every((pid) => !existsSync(`/proc/${pid}`)), timeoutMs);
}

/**
 * Deterministic, moderately compressible bytes (a few distinct words in an order from a fixed
 * linear congruential sequence): the same file every run, so outputs can be compared byte for byte.
 */
export function generatedText(bytes: number): Buffer {
  const words = ['checkpoint', 'restore', 'freezer', 'cgroup', 'criu', 'agentd', 'thaw', 'dump', '\n', ' ', 'lock', 'page'];
  const out = Buffer.alloc(bytes);
  let x = 12345;
  let at = 0;
  while (at < bytes) {
    x = (Math.imul(x, 1103515245) + 12345) >>> 0;
    const word = words[(x >>> 16) % words.length];
    at += out.write(`${word}${(x >>> 8) & 0xff}`, at, 'latin1');
  }
  return out;
}
