// Talking to agentd over its Unix socket: one HTTP/1.1 request per call, JSON in and out, or NDJSON
// progress for long operations. Every failure becomes an AgentError with the agent's own code, or
// EUNREACHABLE (no agent there) or ETIMEDOUT (no answer in time) from this side.

import { statSync } from 'node:fs';
import { request as httpRequest, type IncomingMessage } from 'node:http';
import { AgentError, isErrorCode, systemErrno } from '../errors/index.js';
import { DEFAULT_SOCKET } from '../defaults/index.js';

const NDJSON_TYPE = 'application/x-ndjson';

export interface ClientOptions {
  readonly socket: string;
  /** Give up waiting for the agent after this long; undefined waits as long as the agent works. */
  readonly timeoutMs?: number;
}

export interface ProgressLine {
  readonly stage: string;
  readonly message?: string;
  readonly bytes?: number;
  /** What the stage expects in all, in bytes (the same unit as bytes). */
  readonly total?: number;
  readonly tree?: number;
  readonly trees?: number;
}

export interface CallOptions {
  readonly body?: unknown;
  /** Ask for NDJSON and report each progress line. */
  readonly onProgress?: (event: ProgressLine) => void;
  /** The request's id (X-Request-Id), chosen by the caller so that it can cancel the operation. */
  readonly requestId?: string;
}

const START_HINT =
  'start it with `npm run setup` (from the agentd checkout), `systemctl start agentd` where systemd runs it, ' +
  'or `bin/agentd &` in the foreground';

/** What is at the socket path, for a connection that was refused: a socket, or what instead. */
function kindOf(path: string): 'socket' | 'missing' | string {
  try {
    const stat = statSync(path); // connect(2) follows symbolic links, so this does too
    if (stat.isSocket()) return 'socket';
    if (stat.isDirectory()) return 'a directory';
    return stat.isFile() ? 'a regular file' : 'not a socket';
  } catch {
    return 'missing';
  }
}

/** The EUNREACHABLE error for a failed connection to the socket, saying what is (or is not) there. */
export function unreachable(socket: string, err: unknown): AgentError {
  const errno = systemErrno(err);
  const missing = `no agent listening at ${socket}: there is nothing there; is agentd running? ${START_HINT}`;
  if (errno === 'ENOENT' || errno === 'ENOTDIR') return new AgentError('EUNREACHABLE', missing, { cause: err });
  if (errno === 'ECONNREFUSED') {
    // connect(2) answers ECONNREFUSED both for a socket nobody listens on and for a path that is no
    // socket at all (a regular file); only the second is a mistyped --socket.
    const kind = kindOf(socket);
    if (kind === 'missing') return new AgentError('EUNREACHABLE', missing, { cause: err });
    if (kind !== 'socket') {
      return new AgentError(
        'EUNREACHABLE',
        `${socket} is not a socket (it is ${kind}): pass the agent's socket with --socket or AGENTD_SOCKET (default ${DEFAULT_SOCKET})`,
        { cause: err },
      );
    }
    return new AgentError('EUNREACHABLE', `agentd is not running: nothing listens on ${socket} (a stale socket); ${START_HINT}`, {
      cause: err,
    });
  }
  if (errno === 'EACCES' || errno === 'EPERM') {
    return new AgentError(
      'EUNREACHABLE',
      `permission denied on ${socket}: the agent's socket is for root and the group agentd; run as root or join the group (usermod -aG agentd $USER)`,
      { cause: err },
    );
  }
  return new AgentError('EUNREACHABLE', `cannot reach agentd at ${socket}: ${errno ?? (err as Error).message}`, { cause: err });
}

/** The agent's JSON error body as an AgentError (EIO when there is none). */
export function agentError(status: number, body: unknown): AgentError {
  const error = (body as { error?: { code?: unknown; message?: unknown; details?: Record<string, unknown> } } | null)?.error;
  if (error && typeof error.message === 'string') {
    return new AgentError(isErrorCode(error.code) ? error.code : 'EIO', error.message, error.details ? { details: error.details } : {});
  }
  return new AgentError('EIO', `agentd answered HTTP ${status} without an error description`);
}

/** The whole body of a response, as text. */
export function readAll(res: IncomingMessage): Promise<string> {
  return new Promise((resolve, reject) => {
    let text = '';
    res.setEncoding('utf8');
    res.on('data', (chunk: string) => (text += chunk));
    res.on('end', () => resolve(text));
    res.on('error', reject);
  });
}

function parseJson(text: string, what: string): unknown {
  try {
    return JSON.parse(text);
  } catch {
    throw new AgentError('EIO', `agentd sent ${what} that is not JSON: ${text.slice(0, 200)}`);
  }
}

/** Reads NDJSON lines until the result or error line. */
function readStream(res: IncomingMessage, onProgress: (event: ProgressLine) => void): Promise<unknown> {
  return new Promise((resolve, reject) => {
    let buffered = '';
    let settled = false;
    const handleLine = (line: string) => {
      if (!line.trim() || settled) return;
      const value = parseJson(line, 'a progress line') as { type?: string; result?: unknown; status?: number };
      if (value.type === 'progress') onProgress(value as unknown as ProgressLine);
      else if (value.type === 'result') {
        settled = true;
        resolve(value.result);
      } else if (value.type === 'error') {
        settled = true;
        reject(agentError(value.status ?? 500, value));
      }
    };
    res.setEncoding('utf8');
    res.on('data', (chunk: string) => {
      buffered += chunk;
      let newline;
      try {
        while ((newline = buffered.indexOf('\n')) >= 0) {
          handleLine(buffered.slice(0, newline));
          buffered = buffered.slice(newline + 1);
        }
      } catch (err) {
        settled = true;
        reject(err);
      }
    });
    res.on('end', () => {
      if (!settled) reject(new AgentError('EIO', 'agentd ended the progress stream without a result (did it stop?)'));
    });
    res.on('error', reject);
  });
}

export function call(options: ClientOptions, method: string, path: string, call: CallOptions = {}): Promise<unknown> {
  const payload = call.body === undefined ? undefined : JSON.stringify(call.body);
  const headers: Record<string, string | number> = { Accept: call.onProgress ? NDJSON_TYPE : 'application/json' };
  if (call.requestId !== undefined) headers['X-Request-Id'] = call.requestId;
  if (payload !== undefined) {
    headers['Content-Type'] = 'application/json';
    headers['Content-Length'] = Buffer.byteLength(payload);
  }
  return new Promise((resolve, reject) => {
    let timer: NodeJS.Timeout | undefined;
    // servername '' (a TLS option): the http Agent otherwise works out a TLS server name for every
    // request, and its first IP check compiles an IPv6 pattern that cost 11 ms of each agentctl's
    // start here (docs/bench.md, "agentctl start-up"). The Agent stays: a command's next request
    // goes over the same kept-alive connection.
    const req = httpRequest({ socketPath: options.socket, method, path, headers, ...{ servername: '' } }, (res) => {
      const streaming = (res.headers['content-type'] ?? '').startsWith(NDJSON_TYPE);
      const done =
        streaming && call.onProgress
          ? readStream(res, call.onProgress)
          : readAll(res).then((text) => {
              const body = text ? parseJson(text, 'an answer') : undefined;
              if ((res.statusCode ?? 500) >= 400) throw agentError(res.statusCode ?? 500, body);
              return body;
            });
      done.then(resolve, reject).finally(() => clearTimeout(timer));
    });
    req.on('error', (err) => {
      clearTimeout(timer);
      reject(unreachable(options.socket, err));
    });
    if (options.timeoutMs !== undefined) {
      const seconds = options.timeoutMs / 1000;
      timer = setTimeout(() => {
        reject(new AgentError('ETIMEDOUT', `agentd did not answer ${method} ${path.split('?')[0]} within ${seconds} s`));
        req.destroy();
      }, options.timeoutMs);
    }
    req.end(payload);
  });
}
