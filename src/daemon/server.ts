// The HTTP/1.1 server on the agent's Unix socket: peer credentials read as each connection arrives,
// JSON answers to malformed HTTP, and a shutdown that stops accepting, lets running requests end,
// then closes every connection.

import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { Socket } from 'node:net';
import { recordPeer } from './peer.js';

type Handler = (req: IncomingMessage, res: ServerResponse) => Promise<void>;
type UpgradeHandler = (req: IncomingMessage, socket: Socket, head: Buffer) => void;

// Requests are small and sent at once; a client that dribbles its headers or body is not waited for.
const HEADERS_TIMEOUT_MS = 10_000;
const REQUEST_TIMEOUT_MS = 30_000;
const MAX_HEADER_BYTES = 16 * 1024;

function rawJsonError(socket: Socket, status: number, reason: string, code: string, message: string): void {
  if (!socket.writable) {
    socket.destroy();
    return;
  }
  const body = JSON.stringify({ error: { code, message } }) + '\n';
  socket.end(
    `HTTP/1.1 ${status} ${reason}\r\nContent-Type: application/json; charset=utf-8\r\n` +
      `Content-Length: ${Buffer.byteLength(body)}\r\nConnection: close\r\n\r\n${body}`,
  );
}

export class ApiServer {
  readonly server: Server;
  private inFlight = 0;
  private idleWaiters: (() => void)[] = [];

  /** `onUpgrade` takes the requests that ask for an HTTP Upgrade (attaching to a terminal, src/daemon/attach.ts). */
  constructor(handler: Handler, onError: (message: string) => void, onUpgrade?: UpgradeHandler) {
    this.server = createServer(
      { headersTimeout: HEADERS_TIMEOUT_MS, requestTimeout: REQUEST_TIMEOUT_MS, maxHeaderSize: MAX_HEADER_BYTES },
      (req, res) => {
        this.inFlight++;
        handler(req, res)
          .catch((err) => {
            onError(`request handler failed: ${(err as Error).stack ?? String(err)}`);
            if (!res.headersSent) res.writeHead(500);
            res.end();
          })
          .finally(() => {
            this.inFlight--;
            if (this.inFlight === 0) for (const wake of this.idleWaiters.splice(0)) wake();
          });
      },
    );
    this.server.on('connection', (socket: Socket) => recordPeer(socket));
    if (onUpgrade) this.server.on('upgrade', onUpgrade);
    this.server.on('clientError', (err: NodeJS.ErrnoException, socket: Socket) => {
      if (err.code === 'HPE_HEADER_OVERFLOW') {
        return rawJsonError(
          socket,
          431,
          'Request Header Fields Too Large',
          'EINVAL',
          `request headers are larger than ${MAX_HEADER_BYTES} bytes`,
        );
      }
      if (err.code === 'ERR_HTTP_REQUEST_TIMEOUT') {
        return rawJsonError(socket, 408, 'Request Timeout', 'EINVAL', 'the request was not received in time');
      }
      if (err.code === 'ECONNRESET' || !socket.writable) {
        socket.destroy();
        return;
      }
      rawJsonError(socket, 400, 'Bad Request', 'EINVAL', `malformed HTTP request: ${err.code ?? err.message}`);
    });
  }

  /** Stops accepting connections; resolves once every connection has closed. */
  stopAccepting(): Promise<void> {
    const closed = new Promise<void>((resolve) => this.server.close(() => resolve()));
    this.server.closeIdleConnections();
    return closed;
  }

  /** Resolves when no request is being handled. */
  idle(): Promise<void> {
    if (this.inFlight === 0) return Promise.resolve();
    return new Promise((resolve) => this.idleWaiters.push(resolve));
  }

  closeAllConnections(): void {
    this.server.closeAllConnections();
  }
}
