// A starting gate for races between separate processes. Clients (agentctl processes) connect to the
// gate's socket as if it were agentd's; the gate reads each one's whole request and holds it, and
// when `expected` requests are in, forwards them all at once, each to its agentd (round robin over
// the targets), then relays the answers. Node starts in a few hundred ms, far longer than a
// checkpoint takes to take its lock: without the gate the "concurrent" requests would arrive one
// after the other.

import { createServer, connect, type Server, type Socket } from 'node:net';

interface Held {
  readonly client: Socket;
  readonly bytes: Buffer;
}

/** Whether buf holds one whole HTTP/1.1 request (Content-Length or chunked body). */
function wholeRequest(buf: Buffer): boolean {
  const text = buf.toString('latin1');
  const end = text.indexOf('\r\n\r\n');
  if (end < 0) return false;
  const head = text.slice(0, end);
  const body = text.slice(end + 4);
  const length = /\r\ncontent-length: *(\d+)/i.exec(head);
  if (length) return Buffer.byteLength(body, 'latin1') >= Number(length[1]);
  if (/\r\ntransfer-encoding: *chunked/i.test(head)) return body.endsWith('0\r\n\r\n');
  return true;
}

export class Gate {
  private readonly server: Server;
  private readonly held: Held[] = [];
  private opened = false;
  /** Resolves when the gate opened, with the time it did. */
  readonly opening: Promise<number>;
  private open!: (at: number) => void;

  constructor(
    readonly path: string,
    private readonly targets: readonly string[],
    private readonly expected: number,
  ) {
    this.opening = new Promise((resolve) => (this.open = resolve));
    this.server = createServer((client) => {
      let buf = Buffer.alloc(0);
      const onData = (chunk: Buffer) => {
        buf = Buffer.concat([buf, chunk]);
        if (!wholeRequest(buf)) return;
        client.off('data', onData);
        client.pause();
        this.held.push({ client, bytes: buf });
        if (this.held.length === this.expected) this.release();
      };
      client.on('data', onData);
      client.on('error', () => undefined);
    });
  }

  listen(): Promise<void> {
    return new Promise((resolve) => this.server.listen(this.path, resolve));
  }

  /** How many requests are held right now. */
  get waiting(): number {
    return this.held.length;
  }

  private release(): void {
    if (this.opened) return;
    this.opened = true;
    this.open(Date.now());
    this.held.forEach(({ client, bytes }, i) => {
      const upstream = connect(this.targets[i % this.targets.length]);
      upstream.on('error', () => client.destroy());
      client.on('error', () => upstream.destroy());
      upstream.write(bytes);
      upstream.pipe(client);
      client.pipe(upstream);
      client.resume();
    });
  }

  close(): Promise<void> {
    for (const { client } of this.held) client.destroy();
    return new Promise((resolve) => this.server.close(() => resolve()));
  }
}
