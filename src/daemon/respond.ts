// Writing JSON replies and JSON errors. Every error body is `{"error":{"code","message"}}`.

import type { IncomingMessage, ServerResponse } from 'node:http';
import { errorResponse } from './http-status.js';

export const JSON_TYPE = 'application/json; charset=utf-8';

export function sendJson(res: ServerResponse, status: number, body: unknown, headers: Record<string, string> = {}): void {
  const payload = JSON.stringify(body) + '\n';
  res.writeHead(status, { ...headers, 'Content-Type': JSON_TYPE, 'Content-Length': Buffer.byteLength(payload) });
  res.end(payload);
}

export function sendText(res: ServerResponse, status: number, contentType: string, text: string): void {
  res.writeHead(status, { 'Content-Type': contentType, 'Content-Length': Buffer.byteLength(text) });
  res.end(text);
}

// A refused body that is still arriving is read and dropped up to this much, so that the client,
// still writing, gets to read our error instead of a broken pipe; beyond it the connection is cut.
const DRAIN_LIMIT = 1024 * 1024;

/** Sends the error reply for `err` and returns it. */
export function sendError(req: IncomingMessage, res: ServerResponse, err: unknown): ReturnType<typeof errorResponse> {
  const reply = errorResponse(err);
  const headers: Record<string, string> = { ...reply.headers };
  if (!req.complete) {
    if (Number(req.headers['content-length'] ?? 0) > DRAIN_LIMIT) {
      headers.Connection = 'close';
    } else {
      let drained = 0;
      req.on('data', (chunk: Buffer) => {
        drained += chunk.length;
        if (drained > DRAIN_LIMIT) req.socket.destroy();
      });
      req.resume();
    }
  }
  sendJson(res, reply.status, reply.body, headers);
  return reply;
}
