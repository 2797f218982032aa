// Streaming an archive to or from agentd: the body of an export goes straight to a file or stdout,
// the body of an import straight from one, never held in memory. The agent may answer an import
// before it has read the whole body (a refusal names the entry at fault): the answer is taken as
// soon as it arrives and the upload stopped.

import { request as httpRequest, type ClientRequest, type IncomingMessage } from 'node:http';
import type { Readable, Writable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { AgentError } from '../errors/index.js';
import { agentError, readAll, unreachable, type ClientOptions } from './client.js';

async function failure(res: IncomingMessage): Promise<AgentError> {
  const text = await readAll(res).catch(() => '');
  let body: unknown;
  try {
    body = JSON.parse(text);
  } catch {
    body = undefined;
  }
  return agentError(res.statusCode ?? 500, body);
}

function withTimeout(options: ClientOptions, req: ClientRequest, what: string, reject: (err: Error) => void): () => void {
  if (options.timeoutMs === undefined) return () => undefined;
  const timer = setTimeout(() => {
    reject(new AgentError('ETIMEDOUT', `agentd did not finish ${what} within ${options.timeoutMs! / 1000} s`));
    req.destroy();
  }, options.timeoutMs);
  return () => clearTimeout(timer);
}

/**
 * GET `path` and stream a 200 body into `out` (through `tap` first, when given, which sees every
 * chunk). Resolves with the response headers once the body is all written; an error answer is the
 * agent's AgentError, a body cut off midway EIO.
 */
export function download(
  options: ClientOptions,
  path: string,
  out: Writable,
  onResponse: (res: IncomingMessage) => void = () => undefined,
): Promise<IncomingMessage> {
  return new Promise((resolve, reject) => {
    const req = httpRequest({
      socketPath: options.socket,
      method: 'GET',
      path,
      headers: { Accept: 'application/x-agentd-archive, application/json' },
    });
    const clear = withTimeout(options, req, `GET ${path}`, reject);
    req.on('error', (err) => {
      clear();
      reject(unreachable(options.socket, err));
    });
    req.on('response', (res) => {
      if (res.statusCode !== 200) {
        void failure(res).then(reject, reject).finally(clear);
        return;
      }
      onResponse(res);
      pipeline(res, out).then(
        () => {
          clear();
          resolve(res);
        },
        (err: Error) => {
          clear();
          reject(new AgentError('EIO', `the archive stream from agentd was cut off (${err.message}); the agent's log says why`));
        },
      );
    });
    req.end();
  });
}

/**
 * POST `input` as the body of `path` and resolve with the JSON answer (or reject with the agent's
 * error). `size`, when known, is sent as Content-Length.
 */
export function upload(
  options: ClientOptions,
  path: string,
  input: Readable,
  contentType: string,
  size: number | undefined,
): Promise<unknown> {
  return new Promise((resolve, reject) => {
    const headers: Record<string, string | number> = { 'Content-Type': contentType, Accept: 'application/json' };
    if (size !== undefined) headers['Content-Length'] = size;
    const req = httpRequest({ socketPath: options.socket, method: 'POST', path, headers });
    const clear = withTimeout(options, req, `POST ${path}`, reject);
    let answered = false;
    let inputError: Error | undefined;
    req.on('error', (err) => {
      // Once the answer is in, the connection's end (the agent stops reading a refused body) is no news.
      if (answered) return;
      clear();
      reject(inputError ? new AgentError('EIO', `cannot read the archive: ${inputError.message}`) : unreachable(options.socket, err));
    });
    req.on('response', (res) => {
      answered = true;
      input.unpipe(req);
      input.destroy();
      void readAll(res)
        .then((text) => {
          let body: unknown;
          try {
            body = text ? JSON.parse(text) : undefined;
          } catch {
            throw new AgentError('EIO', `agentd sent an answer that is not JSON: ${text.slice(0, 200)}`);
          }
          if ((res.statusCode ?? 500) >= 400) throw agentError(res.statusCode ?? 500, body);
          return body;
        })
        .then(resolve, reject)
        .finally(() => {
          clear();
          req.destroy();
        });
    });
    input.on('error', (err) => {
      inputError = err;
      req.destroy(err);
    });
    input.pipe(req);
  });
}
