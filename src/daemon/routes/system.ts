// Routes about the agent and its host: the route list, health, host facts, Prometheus metrics.

import { json, type RequestContext, type Reply } from '../context.js';
import { METRICS_CONTENT_TYPE } from '../metrics.js';
import { refuseQuery, expectNoBody } from '../request.js';
import type { Route } from '../router.js';

async function noInput(ctx: RequestContext): Promise<void> {
  refuseQuery(ctx.url);
  await expectNoBody(ctx.req);
}

export function systemRoutes(all: () => readonly Route[]): Route[] {
  return [
    {
      method: 'GET',
      pattern: '/v1',
      async handle(ctx): Promise<Reply> {
        await noInput(ctx);
        return json(200, { version: ctx.services.version, routes: all().map((r) => `${r.method} ${r.pattern}`) });
      },
    },
    {
      method: 'GET',
      pattern: '/v1/health',
      async handle(ctx): Promise<Reply> {
        await noInput(ctx);
        const { services } = ctx;
        return json(200, {
          status: services.shuttingDown() ? 'stopping' : 'ok',
          version: services.version,
          pid: process.pid,
          startedAt: services.startedAt.toISOString(),
          uptimeSeconds: Math.round((Date.now() - services.startedAt.getTime()) / 1000),
          operations: services.operations.views(),
        });
      },
    },
    {
      method: 'GET',
      pattern: '/v1/host',
      async handle(ctx): Promise<Reply> {
        await noInput(ctx);
        return json(200, await ctx.services.host.facts());
      },
    },
    {
      method: 'GET',
      pattern: '/v1/metrics',
      async handle(ctx): Promise<Reply> {
        await noInput(ctx);
        return { kind: 'text', status: 200, contentType: METRICS_CONTENT_TYPE, text: await ctx.services.metrics.render() };
      },
    },
  ];
}
