// A cgroup's freezer state, freeze, thaw and kill, all through CgroupControl (which takes the cgroup's
// lock, so a CHECKPOINTING cgroup answers EBUSY). The cgroup is named as agentctl takes it: a path
// relative to a hierarchy root, or an absolute directory under a cgroup mount, plus an optional
// hierarchy (v1 or v2).

import { performance } from 'node:perf_hooks';
import { describeCgroup, resolveCgroup, type CgroupRef, type Hierarchy } from '../../cgroup/index.js';
import { json, type RequestContext, type Reply } from '../context.js';
import {
  hierarchy,
  timeoutMs,
  optional,
  queryObject,
  readJsonObject,
  refuseQuery,
  required,
  validate,
  expectNoBody,
  text,
} from '../request.js';
import type { Route } from '../router.js';

const CGROUP_FIELDS = { cgroup: required(text), hierarchy: optional(hierarchy) };
const TIMED_FIELDS = { ...CGROUP_FIELDS, timeoutMs: optional(timeoutMs) };

function resolve(ctx: RequestContext, input: { cgroup: string; hierarchy?: 'v1' | 'v2' }): CgroupRef {
  const ref = resolveCgroup(input.cgroup, input.hierarchy ? { hierarchy: input.hierarchy } : {});
  ctx.audit.cgroup = describeCgroup(ref);
  return ref;
}

/**
 * A freeze, thaw or kill request: the cgroup (and, where it takes one, a timeout) from the body only,
 * since a query (?cgroup=...) would be silently ignored, so one is refused.
 */
async function changeRequest(
  ctx: RequestContext,
  operation: 'freeze' | 'thaw' | 'kill',
  timed: boolean,
): Promise<{ ref: CgroupRef; options: { requestId: string; timeoutMs?: number } }> {
  ctx.audit.operation = operation;
  refuseQuery(ctx.url);
  const input = await readJsonObject(ctx.req);
  const body: { cgroup: string; hierarchy?: Hierarchy; timeoutMs?: number } = timed
    ? validate(input, TIMED_FIELDS)
    : validate(input, CGROUP_FIELDS);
  return { ref: resolve(ctx, body), options: { requestId: ctx.requestId, ...(body.timeoutMs ? { timeoutMs: body.timeoutMs } : {}) } };
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
        const { ref, options } = await changeRequest(ctx, 'freeze', true);
        const started = performance.now();
        const status = await ctx.services.control.freeze(ref, options);
        ctx.services.metrics.freezes.observe((performance.now() - started) / 1000);
        return json(200, status);
      },
    },
    {
      method: 'POST',
      pattern: '/v1/cgroups/kill',
      async handle(ctx): Promise<Reply> {
        const { ref, options } = await changeRequest(ctx, 'kill', true);
        return json(200, await ctx.services.control.kill(ref, options));
      },
    },
    {
      method: 'POST',
      pattern: '/v1/cgroups/thaw',
      async handle(ctx): Promise<Reply> {
        const { ref, options } = await changeRequest(ctx, 'thaw', false);
        return json(200, await ctx.services.control.thaw(ref, options));
      },
    },
  ];
}
