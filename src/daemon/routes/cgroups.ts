// A cgroup's freezer state, freeze, thaw and kill, all through CgroupControl (which takes the cgroup's
// lock, so a CHECKPOINTING cgroup answers EBUSY). The cgroup is named as agentctl takes it: a path
// relative to a hierarchy root, or an absolute directory under a cgroup mount, plus an optional
// hierarchy (v1 or v2).

import { performance } from 'node:perf_hooks';
import { describeCgroup, resolveCgroup, type CgroupRef } from '../../cgroup/index.js';
import { json, type RequestContext, type Reply } from '../context.js';
import { expectNoBody, hierarchy, optional, queryObject, readJsonObject, required, text, timeoutMs, validate } from '../request.js';
import type { Route } from '../router.js';

const CGROUP_FIELDS = { cgroup: required(text), hierarchy: optional(hierarchy) };

function resolve(ctx: RequestContext, input: { cgroup: string; hierarchy?: 'v1' | 'v2' }): CgroupRef {
  const ref = resolveCgroup(input.cgroup, input.hierarchy ? { hierarchy: input.hierarchy } : {});
  ctx.audit.cgroup = describeCgroup(ref);
  return ref;
}

export function cgroupRoutes(): Route[] {
  return [
    {
      method: 'GET',
      pattern: '/v1/cgroups/state',
      async handle(ctx): Promise<Reply> {
        const query = validate(queryObject(ctx.url), CGROUP_FIELDS, 'query parameter');
        await expectNoBody(ctx.req);
        return json(200, ctx.services.control.status(resolve(ctx, query)));
      },
    },
    {
      method: 'POST',
      pattern: '/v1/cgroups/freeze',
      async handle(ctx): Promise<Reply> {
        ctx.audit.operation = 'freeze';
        // The cgroup comes from the body only: a query (?cgroup=...) would be silently ignored, so refuse it.
        validate(queryObject(ctx.url), {}, 'query parameter');
        const body = validate(await readJsonObject(ctx.req), { ...CGROUP_FIELDS, timeoutMs: optional(timeoutMs) });
        const ref = resolve(ctx, body);
        const started = performance.now();
        const status = await ctx.services.control.freeze(ref, { requestId: ctx.requestId, ...(body.timeoutMs ? { timeoutMs: body.timeoutMs } : {}) });
        ctx.services.metrics.freezes.observe((performance.now() - started) / 1000);
        return json(200, status);
      },
    },
    {
      method: 'POST',
      pattern: '/v1/cgroups/kill',
      async handle(ctx): Promise<Reply> {
        ctx.audit.operation = 'kill';
        validate(queryObject(ctx.url), {}, 'query parameter');
        const body = validate(await readJsonObject(ctx.req), { ...CGROUP_FIELDS, timeoutMs: optional(timeoutMs) });
        const ref = resolve(ctx, body);
        return json(200, await ctx.services.control.kill(ref, { requestId: ctx.requestId, ...(body.timeoutMs ? { timeoutMs: body.timeoutMs } : {}) }));
      },
    },
    {
      method: 'POST',
      pattern: '/v1/cgroups/thaw',
      async handle(ctx): Promise<Reply> {
        ctx.audit.operation = 'thaw';
        validate(queryObject(ctx.url), {}, 'query parameter');
        const body = validate(await readJsonObject(ctx.req), CGROUP_FIELDS);
        return json(200, await ctx.services.control.thaw(resolve(ctx, body), { requestId: ctx.requestId }));
      },
    },
  ];
}
