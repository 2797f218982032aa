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

/**
 * Sends the error reply for `err` and returns it. When the request body was not read to its end
 * (refused as too large, or the route was unknown), the connection is closed after the reply rather
 * than reading whatever the client still sends.
 */
export function sendError(req: IncomingMessage, res: ServerResponse, err: unknown): ReturnType<typeof errorResponse> {
  const reply = errorResponse(err);
  const headers: Record<string, string> = { ...reply.headers };
  if (!req.complete) {
    headers.Connection = 'close';
    res.once('finish', () => req.socket.destroySoon());
  }
  sendJson(res, reply.status, reply.body, headers);
  return reply;
}
