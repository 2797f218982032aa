// Attaching a client to a terminal agentd holds (src/terminal): `GET /v1/cgroups/terminal?cgroup=...`
// with `Connection: Upgrade` and `Upgrade: agentd-terminal/1`. Node hands such a request to the
// server's 'upgrade' event instead of the request handler, so this file checks it itself, answers a
// refusal as the API's usual JSON error (and closes), and otherwise answers 101 Switching Protocols
// and speaks the frames of src/terminal/frames.ts on the connection until the client detaches, the
// job ends or agentd stops. The same socket, never TCP.

import { STATUS_CODES, type IncomingMessage } from 'node:http';
import type { Socket } from 'node:net';
import { resolveCgroup, type Hierarchy } from '../cgroup/index.js';
import { AgentError } from '../errors/index.js';
import { DETACH, FrameReader, INPUT, parseSize, PROTOCOL, RESIZE, type Size, type TerminalClient } from '../terminal/index.js';
import type { Services } from './context.js';
import { errorResponse, ProtocolError } from './http-status.js';
import { peerOf } from './peer.js';
import { hierarchy, optional, queryObject, required, text, validate, type Checker } from './request.js';

export const TERMINAL_ROUTE = '/v1/cgroups/terminal';

// A client that reads this far behind a job's output is dropped (the job runs on, and the output
// stays in the scrollback for the next attach) rather than buffered in agentd without bound.
const MAX_UNSENT_BYTES = 4 * 1024 * 1024;
// After agentd ends the session, a client that does not close its side is cut off this much later.
const CLOSE_GRACE_MS = 2_000;

/** A terminal dimension in a query string: a whole number from 1 to 10000. */
const dimension: Checker<number> = (value, field) => {
  const n = typeof value === 'string' && /^\d{1,5}$/.test(value) ? Number(value) : NaN;
  if (!(n >= 1 && n <= 10_000)) throw new ProtocolError(400, 'EINVAL', `"${field}" must be a whole number from 1 to 10000`);
  return n;
};

const yesNo: Checker<boolean> = (value, field) => {
  if (value === 'true' || value === '1') return true;
  if (value === 'false' || value === '0') return false;
  throw new ProtocolError(400, 'EINVAL', `"${field}" must be true or false`);
};

export const ATTACH_QUERY = {
  cgroup: required(text),
  hierarchy: optional(hierarchy),
  cols: optional(dimension),
  rows: optional(dimension),
  takeOver: optional(yesNo),
};

/** The cgroup an attach or status request names, as the terminals are keyed. */
export function terminalOf(query: { cgroup: string; hierarchy?: Hierarchy }): { cgroup: string; hierarchy: Hierarchy } {
  const ref = resolveCgroup(query.cgroup, query.hierarchy ? { hierarchy: query.hierarchy } : {});
  return { cgroup: ref.path, hierarchy: ref.hierarchy };
}

function sizeOf(query: { cols?: number; rows?: number }): Size | undefined {
  if (query.cols === undefined && query.rows === undefined) return undefined;
  if (query.cols === undefined || query.rows === undefined) throw new ProtocolError(400, 'EINVAL', 'give "cols" and "rows" together');
  return { cols: query.cols, rows: query.rows };
}

function rawReply(socket: Socket, status: number, headers: Record<string, string>, body: string): void {
  const lines = [`HTTP/1.1 ${status} ${STATUS_CODES[status] ?? ''}`, ...Object.entries(headers).map(([k, v]) => `${k}: ${v}`)];
  socket.write(`${lines.join('\r\n')}\r\n\r\n${body}`);
}

export function createUpgradeHandler(services: Services) {
  return (req: IncomingMessage, socket: Socket, head: Buffer): void => {
    const peer = peerOf(socket);
    const who = `${peer ? `pid ${peer.pid} (uid ${peer.uid})` : 'a client'}`;
    let status = 101;
    let code: string | undefined;
    let cgroup: string | undefined;
    try {
      if (services.shuttingDown()) throw new ProtocolError(503, 'EINTR', 'agentd is shutting down; retry once it is back');
      const url = new URL(`http://agentd${req.url?.startsWith('/') ? req.url : '/'}`);
      if (url.pathname !== TERMINAL_ROUTE) {
        throw new ProtocolError(
          404,
          'ENOENT',
          `only ${TERMINAL_ROUTE} takes an Upgrade (to ${PROTOCOL}); ${url.pathname.slice(0, 200)} does not`,
        );
      }
      if (req.method !== 'GET')
        throw new ProtocolError(405, 'EINVAL', `${req.method} is not allowed on ${TERMINAL_ROUTE} (allowed: GET)`, { Allow: 'GET' });
      const wanted = String(req.headers.upgrade ?? '')
        .trim()
        .toLowerCase();
      if (wanted !== PROTOCOL)
        throw new ProtocolError(400, 'EINVAL', `unsupported Upgrade "${wanted.slice(0, 100)}": this agent speaks ${PROTOCOL}`);
      const query = validate(queryObject(url), ATTACH_QUERY, 'query parameter');
      const size = sizeOf(query);
      const target = terminalOf(query);
      cgroup = `${target.hierarchy}:${target.cgroup}`;
      const session = services.terminals.get(target.cgroup, target.hierarchy);
      const client = socketClient(socket, `agentctl ${who}`);
      session.checkAttach(query.takeOver === true);
      rawReply(socket, 101, { Connection: 'Upgrade', Upgrade: PROTOCOL }, '');
      socket.setTimeout(0);
      socket.setNoDelay(true);
      session.attach(client, { size, takeOver: query.takeOver === true });
      services.logger.info('attach', { uid: peer?.uid, pid: peer?.pid, operation: 'attach', cgroup, job: session.pid, outcome: 'ok' });
      const reader = new FrameReader((type, payload) => {
        if (type === INPUT) session.input(client, payload);
        else if (type === RESIZE) {
          let parsed: { cols?: unknown; rows?: unknown } = {};
          try {
            parsed = JSON.parse(payload.toString('utf8')) as typeof parsed;
          } catch {
            // ignored below: not a size
          }
          const next = parseSize(parsed.cols, parsed.rows);
          if (next && session.isAttached(client)) session.resize(next);
        } else if (type === DETACH) {
          if (session.isAttached(client)) {
            session.detach(client);
            services.logger.info('detach', {
              uid: peer?.uid,
              pid: peer?.pid,
              operation: 'detach',
              cgroup,
              job: session.pid,
              outcome: 'ok',
            });
          }
          client.close();
        }
      });
      const onData = (chunk: Buffer) => {
        try {
          reader.push(chunk);
        } catch {
          session.detach(client);
          socket.destroy();
        }
      };
      socket.on('data', onData);
      socket.on('close', () => session.detach(client));
      if (head.length > 0) onData(head);
    } catch (err) {
      const reply = errorResponse(err);
      status = reply.status;
      code = reply.body.error.code;
      const body = JSON.stringify(reply.body) + '\n';
      rawReply(
        socket,
        reply.status,
        {
          ...reply.headers,
          'Content-Type': 'application/json; charset=utf-8',
          'Content-Length': String(Buffer.byteLength(body)),
          Connection: 'close',
        },
        body,
      );
      socket.end();
      services.logger.warn('attach', { uid: peer?.uid, pid: peer?.pid, operation: 'attach', cgroup, outcome: code, status });
    }
    services.metrics.requests.inc({ method: req.method ?? '', route: TERMINAL_ROUTE, status: String(status) });
    if (code) services.metrics.errors.inc({ code });
  };
}

function socketClient(socket: Socket, who: string): TerminalClient {
  socket.on('error', () => undefined);
  return {
    who,
    send(data) {
      if (socket.destroyed || socket.writableEnded) return;
      if (socket.writableLength > MAX_UNSENT_BYTES) {
        socket.destroy(new AgentError('EIO', `${who} reads too slowly; dropped`));
        return;
      }
      socket.write(data);
    },
    close() {
      if (socket.destroyed) return;
      socket.end();
      setTimeout(() => socket.destroy(), CLOSE_GRACE_MS).unref();
    },
  };
}
