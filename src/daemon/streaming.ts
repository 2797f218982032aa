// Progress of long operations (checkpoint, restore) as NDJSON, for clients that ask with
// `Accept: application/x-ndjson`. One JSON object per line:
//   {"type":"progress","stage":"dump","bytes":1048576,"tree":1,"trees":2}   any number of these
//   {"type":"result","status":201,"result":{...}}                           or, instead, the last line is
//   {"type":"error","status":409,"error":{"code":"EBUSY","message":"..."}}
// The HTTP status is 200 once streaming has begun; the final line's `status` is what a plain request
// would have got. Validation happens before the stream starts, so bad requests still get their 4xx.

import type { IncomingMessage, ServerResponse } from 'node:http';
import type { ProgressEvent } from '../checkpoint/types.js';
import { errorResponse } from './http-status.js';

export const NDJSON_TYPE = 'application/x-ndjson';

export function wantsStream(req: IncomingMessage): boolean {
  const accept = req.headers.accept ?? '';
  return accept.split(',').some((part) => part.trim().toLowerCase().startsWith(NDJSON_TYPE));
}

export class ProgressStream {
  private ended = false;

  constructor(
    private readonly res: ServerResponse,
    headers: Record<string, string> = {},
  ) {
    res.writeHead(200, { ...headers, 'Content-Type': NDJSON_TYPE, 'Cache-Control': 'no-store' });
    // Each line should reach the client as it happens, not when a buffer fills.
    res.socket?.setNoDelay?.(true);
  }

  progress(event: ProgressEvent): void {
    this.line({ type: 'progress', ...event });
  }

  result(status: number, result: unknown): void {
    this.line({ type: 'result', status, result });
    this.end();
  }

  /** Ends the stream with the error; returns its HTTP-equivalent status and code. */
  error(err: unknown): ReturnType<typeof errorResponse> {
    const reply = errorResponse(err);
    this.line({ type: 'error', status: reply.status, ...reply.body });
    this.end();
    return reply;
  }

  private line(value: unknown): void {
    if (this.ended || this.res.destroyed) return;
    this.res.write(JSON.stringify(value) + '\n');
  }

  private end(): void {
    if (this.ended) return;
    this.ended = true;
    this.res.end();
  }
}
