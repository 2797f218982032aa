// Writing JSON replies and JSON errors. Every error body is `{"error":{"code","message"}}`.

import type { IncomingMessage, ServerResponse } from 'node:http';
import { errorResponse } from './http-status.js';

const JSON_TYPE = 'application/json; charset=utf-8';

export function sendJson(res: ServerResponse, status: number, body: unknown, headers: Record<string, string> = {}): void {
  const payload = JSON.stringify(body) + '\n';
  res.writeHead(status, { ...headers, 'Content-Type': JSON_TYPE, 'Content-Length': Buffer.byteLength(payload) });
  res.end(payload);
}

export function sendText(res: ServerResponse, status: number, contentType: string, text: string): void {
  res.writeHead(status, { 'Content-Type': contentType, 'Content-Length': Buffer.byteLength(text) });
  res.end(text);
}

// A refused body that is still arriving is read and dropped before the error is sent: a client that
// writes its whole body before it reads (Node's http client, many libraries) would otherwise see a
// broken pipe instead of our answer, for the connection is closed after the reply when it asked for
// that. The cost is bounded: a body announced over DRAIN_LIMIT_BYTES, or one still arriving past
// either limit, is answered at once and the connection closed.
const DRAIN_LIMIT_BYTES = 16 * 1024 * 1024;
const DRAIN_LIMIT_MS = 10_000;

/** Sends the error reply for `err` (once any body still arriving is drained) and returns it. */
export function sendError(req: IncomingMessage, res: ServerResponse, err: unknown): ReturnType<typeof errorResponse> {
  const reply = errorResponse(err);
  const headers: Record<string, string> = { ...reply.headers };
  const send = () => {
    if (!res.headersSent && !res.destroyed) sendJson(res, reply.status, reply.body, headers);
  };
  if (req.complete || req.readableEnded) {
    send();
  } else if (Number(req.headers['content-length'] ?? 0) > DRAIN_LIMIT_BYTES) {
    headers.Connection = 'close';
    send();
  } else {
    let drained = 0;
    const giveUp = () => {
      headers.Connection = 'close';
      send();
    };
    const timer = setTimeout(giveUp, DRAIN_LIMIT_MS).unref();
    req.on('data', (chunk: Buffer) => {
      drained += chunk.length;
      if (drained > DRAIN_LIMIT_BYTES) giveUp();
    });
    req.once('end', send);
    req.once('close', () => clearTimeout(timer));
    req.resume();
  }
  return reply;
}
