// The request dispatcher: request id, route match, handler, reply, metrics, and one audit log line
// per mutating request (who, what, which cgroup, outcome, duration).

import { randomUUID } from 'node:crypto';
import type { IncomingMessage, ServerResponse } from 'node:http';
import { performance } from 'node:perf_hooks';
import { AgentError } from '../errors/index.js';
import type { Audit, Reply, RequestContext, Services } from './context.js';
import { ProtocolError } from './http-status.js';
import { peerOf } from './peer.js';
import { REQUEST_ID } from './request.js';
import { sendError, sendJson, sendText } from './respond.js';
import { matchRoute, type Route } from './router.js';
import { archiveRoutes } from './routes/archives.js';
import { cgroupRoutes } from './routes/cgroups.js';
import { checkpointRoutes } from './routes/checkpoints.js';
import { operationRoutes } from './routes/operations.js';
import { systemRoutes } from './routes/system.js';
import { terminalRoutes } from './routes/terminals.js';

function allRoutes(): Route[] {
  const routes: Route[] = [];
  routes.push(
    ...systemRoutes(() => routes),
    ...cgroupRoutes(),
    ...checkpointRoutes(),
    ...archiveRoutes(),
    ...operationRoutes(),
    ...terminalRoutes(),
  );
  return routes;
}

/** The request's own id (X-Request-Id, if well-formed) or a new one; echoed in the reply. */
function requestIdOf(req: IncomingMessage): string {
  const given = req.headers['x-request-id'];
  return typeof given === 'string' && REQUEST_ID.test(given) ? given : randomUUID();
}

/** The path of the request, never reinterpreted: `//x` must not become a host name. */
function parseUrl(req: IncomingMessage): URL {
  const raw = req.url ?? '';
  if (!raw.startsWith('/')) throw new ProtocolError(400, 'EINVAL', `request target must be an absolute path, got "${raw.slice(0, 100)}"`);
  try {
    return new URL(`http://agentd${raw}`);
  } catch {
    throw new ProtocolError(400, 'EINVAL', `malformed request target "${raw.slice(0, 100)}"`);
  }
}

export function createRequestHandler(services: Services, routes: readonly Route[] = allRoutes()) {
  return async (req: IncomingMessage, res: ServerResponse): Promise<void> => {
    const started = performance.now();
    const requestId = requestIdOf(req);
    res.setHeader('X-Request-Id', requestId);
    const audit: Audit = {};
    let routeLabel = 'unmatched';
    let readOnly = false;
    let status = 500;
    let code: string | undefined;
    try {
      if (services.shuttingDown()) {
        res.setHeader('Connection', 'close');
        throw new ProtocolError(503, 'EINTR', 'agentd is shutting down; retry once it is back');
      }
      const url = parseUrl(req);
      const { route, params } = matchRoute(routes, req.method ?? '', url.pathname);
      routeLabel = route.pattern;
      readOnly = route.readOnly === true;
      const ctx: RequestContext = { req, res, url, params, requestId, peer: peerOf(req.socket), services, audit };
      const reply: Reply = await route.handle(ctx);
      status = reply.status;
      if (reply.kind === 'json') sendJson(res, reply.status, reply.body);
      else if (reply.kind === 'text') sendText(res, reply.status, reply.contentType, reply.text);
      else code = reply.code;
    } catch (err) {
      if (res.headersSent) {
        // A streamed reply failed after it began: nothing more can be said to this client.
        res.destroy();
        code = err instanceof AgentError ? err.code : 'EIO';
      } else {
        const reply = sendError(req, res, err);
        status = reply.status;
        code = reply.body.error.code;
      }
    }
    const durationMs = Math.round((performance.now() - started) * 10) / 10;
    services.metrics.requests.inc({ method: req.method ?? '', route: routeLabel, status: String(status) });
    if (code) services.metrics.errors.inc({ code });
    logRequest(services, req, { requestId, audit, status, code, durationMs, route: routeLabel, readOnly });
  };
}

function logRequest(
  services: Services,
  req: IncomingMessage,
  r: { requestId: string; audit: Audit; status: number; code?: string; durationMs: number; route: string; readOnly: boolean },
): void {
  const peer = peerOf(req.socket);
  const fields = {
    uid: peer?.uid,
    pid: peer?.pid,
    operation: r.audit.operation,
    cgroup: r.audit.cgroup,
    checkpoint: r.audit.checkpoint,
    outcome: r.code ?? 'ok',
    status: r.status,
    ms: r.durationMs,
    request: r.requestId,
  };
  const mutating = (req.method === 'POST' || req.method === 'DELETE') && !r.readOnly;
  const what = r.audit.operation ?? `${req.method} ${r.route}`;
  if (!mutating) services.logger.debug(what, fields);
  else if (!r.code) services.logger.info(what, fields);
  else if (r.status >= 500) services.logger.error(what, fields);
  else services.logger.warn(what, fields);
}
