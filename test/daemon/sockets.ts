// Sockets Node cannot make, made with libc as systemd would: an AF_UNIX datagram socket to receive
// sd_notify messages on (a test NOTIFY_SOCKET), and a bound, listening AF_UNIX stream socket to hand
// to agentd as fd 3 (socket activation) without Node ever accepting on it or unlinking it.

import koffi from 'koffi';
import { AF_UNIX, SOCK_CLOEXEC, SOCK_DGRAM, libc, unixAddress } from '../../src/daemon/libc.js';

const SOCK_STREAM = 1;
const SOCK_NONBLOCK = 0o4000;
const MSG_DONTWAIT = 0x40;
const EAGAIN = 11;

/** What the tests need of libc beyond the agent's own bindings (src/daemon/libc.ts). */
interface TestLibc {
  bind(fd: number, addr: Buffer, len: number): number;
  listen(fd: number, backlog: number): number;
  recv(fd: number, buf: Buffer, len: number, flags: number): number;
}

let testLibc: TestLibc | undefined;
function extraLibc(): TestLibc {
  if (testLibc) return testLibc;
  const lib = koffi.load('libc.so.6');
  testLibc = {
    bind: lib.func('int bind(int, const void *, uint32_t)'),
    listen: lib.func('int listen(int, int)'),
    recv: lib.func('intptr_t recv(int, void *, size_t, int)'),
  };
  return testLibc;
}

function bound(type: number, path: string): number {
  const c = libc();
  const fd = c.socket(AF_UNIX, type, 0);
  if (fd < 0) throw new Error(`socket: errno ${c.errno()}`);
  const { addr, len } = unixAddress(path);
  if (extraLibc().bind(fd, addr, len) !== 0) {
    const errno = c.errno();
    c.close(fd);
    throw new Error(`bind ${path}: errno ${errno}`);
  }
  return fd;
}

/** A listening stream socket at `path`; the caller passes the fd on and closes it. */
export function listeningSocket(path: string): number {
  // Not CLOEXEC: the fd is meant to be inherited (spawn dup2s it to 3 anyway).
  const fd = bound(SOCK_STREAM, path);
  if (extraLibc().listen(fd, 64) !== 0) {
    const errno = libc().errno();
    libc().close(fd);
    throw new Error(`listen ${path}: errno ${errno}`);
  }
  return fd;
}

export function closeFd(fd: number): void {
  libc().close(fd);
}

/** Collects every datagram sent to `path`, polling without blocking the event loop. */
export class NotifyReceiver {
  readonly messages: string[] = [];
  private readonly fd: number;
  private readonly timer: NodeJS.Timeout;
  private readonly buffer = Buffer.alloc(4096);

  constructor(readonly path: string) {
    this.fd = bound(SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, path);
    this.timer = setInterval(() => this.drain(), 5);
  }

  private drain(): void {
    const c = libc();
    for (;;) {
      const n = extraLibc().recv(this.fd, this.buffer, this.buffer.length, MSG_DONTWAIT);
      if (n < 0) {
        const errno = c.errno();
        if (errno !== EAGAIN) throw new Error(`recv: errno ${errno}`);
        return;
      }
      this.messages.push(this.buffer.subarray(0, Number(n)).toString('utf8'));
    }
  }

  /** Waits for a message containing `line` (e.g. `READY=1`) and returns it. */
  async waitFor(line: string, timeoutMs = 20_000): Promise<string> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      this.drain();
      const found = this.messages.find((m) => m.split('\n').includes(line));
      if (found) return found;
      if (Date.now() > deadline) throw new Error(`no "${line}" on ${this.path}; got ${JSON.stringify(this.messages)}`);
      await new Promise((r) => setTimeout(r, 10));
    }
  }

  close(): void {
    clearInterval(this.timer);
    libc().close(this.fd);
  }
}
