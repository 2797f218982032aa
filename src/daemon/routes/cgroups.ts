// A cgroup's freezer state, freeze, thaw and kill, all through CgroupControl (which takes the cgroup's
// lock, so a CHECKPOINTING cgroup answers EBUSY). The cgroup is named as agentctl takes it: a path
// relative to a hierarchy root, or an absolute directory under a cgroup mount, plus an optional
// hierarchy (v1 or v2).

import { performance } from 'node:perf_hooks';
import { describeCgroup, resolveCgroup, type CgroupRef, type Hierarchy } from '../../cgroup/index.js';
import { AgentError, isAgentError, type ErrorCode } from '../../errors/index.js';
import type { BatchResult, CgroupStatus } from '../../lock/index.js';
import { json, type RequestContext, type Reply } from '../context.js';
import {
  cgroupList,
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
const BATCH_FIELDS = { cgroups: required(cgroupList), hierarchy: optional(hierarchy) };
const TIMED_BATCH_FIELDS = { ...BATCH_FIELDS, timeoutMs: optional(timeoutMs) };

/** A cgroup name from a request, in the hierarchy it names (or found in either). */
function resolveIn(name: string, h: Hierarchy | undefined): CgroupRef {
  return resolveCgroup(name, h ? { hierarchy: h } : {});
}

function resolve(ctx: RequestContext, input: { cgroup: string; hierarchy?: 'v1' | 'v2' }): CgroupRef {
  const ref = resolveIn(input.cgroup, input.hierarchy);
  ctx.audit.cgroup = describeCgroup(ref);
  return ref;
}

/** The options of a freezer change: the request's id, and its timeout when it gave one. */
function changeOptions(ctx: RequestContext, body: { timeoutMs?: number }): { requestId: string; timeoutMs?: number } {
  return { requestId: ctx.requestId, ...(body.timeoutMs ? { timeoutMs: body.timeoutMs } : {}) };
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
  return { ref: resolve(ctx, body), options: changeOptions(ctx, body) };
}

/** One cgroup of a many-cgroup answer: the name as the request gave it, then what became of it. */
export interface NamedResult {
  readonly name: string;
  readonly outcome: BatchResult['outcome'];
  readonly status?: CgroupStatus;
  readonly error?: { code: ErrorCode; message: string };
}

/** POST /v1/freeze and /v1/thaw: every cgroup's status, in the order given. */
export interface BatchReply {
  readonly results: NamedResult[];
}

/** POST /v1/state: each cgroup's status, or the error that cgroup alone got. */
export interface StateBatchReply {
  readonly results: { name: string; status?: CgroupStatus; error?: { code: ErrorCode; message: string } }[];
}

function auditMany(ctx: RequestContext, operation: string, refs: readonly CgroupRef[]): void {
  ctx.audit.operation = operation;
  const first = refs.length > 0 ? describeCgroup(refs[0]) : '';
  ctx.audit.cgroup = refs.length > 1 ? `${first} (+${refs.length - 1} more)` : first;
}

/**
 * Every name resolved before anything is done: the first that does not resolve (ENOENT, EINVAL
 * for `..`) refuses the request with nothing changed, naming it.
 */
function resolveAll(operation: string, names: readonly string[], h: Hierarchy | undefined): CgroupRef[] {
  return names.map((name, i) => {
    try {
      return resolveIn(name, h);
    } catch (err) {
      if (!isAgentError(err)) throw err;
      const results: NamedResult[] = names.map((n, j) =>
        j === i ? { name: n, outcome: 'failed', error: { code: err.code, message: err.message } } : { name: n, outcome: 'unchanged' },
      );
      throw new AgentError(err.code, `${operation} of ${names.length} cgroups failed at "${name}": ${err.message}; nothing was changed`, {
        cause: err,
        details: { failed: i, results },
      });
    }
  });
}

/** CgroupControl's per-cgroup results in its error, with each name as the request gave it. */
function named(err: unknown, names: readonly string[]): unknown {
  const results = isAgentError(err) ? (err.details?.results as BatchResult[] | undefined) : undefined;
  if (!isAgentError(err) || !Array.isArray(results)) return err;
  const withNames = results.map(({ cgroup: _c, hierarchy: _h, ...rest }, i): NamedResult => ({ name: names[i], ...rest }));
  return new AgentError(err.code, err.message, { cause: err.cause, details: { ...err.details, results: withNames } });
}

/** POST /v1/freeze and /v1/thaw: many cgroups in one request, all or nothing (docs/daemon-and-cli.md). */
function batchRoute(operation: 'freeze' | 'thaw'): Route {
  return {
    method: 'POST',
    pattern: `/v1/${operation}`,
    async handle(ctx): Promise<Reply> {
      refuseQuery(ctx.url);
      const input = await readJsonObject(ctx.req);
      const body: { cgroups: string[]; hierarchy?: Hierarchy; timeoutMs?: number } =
        operation === 'freeze' ? validate(input, TIMED_BATCH_FIELDS) : validate(input, BATCH_FIELDS);
      ctx.audit.operation = operation;
      const refs = resolveAll(operation, body.cgroups, body.hierarchy);
      auditMany(ctx, operation, refs);
      const options = changeOptions(ctx, body);
      const started = performance.now();
      let statuses: CgroupStatus[];
      try {
        statuses =
          operation === 'freeze' ? await ctx.services.control.freezeAll(refs, options) : await ctx.services.control.thawAll(refs, options);
      } catch (err) {
        throw named(err, body.cgroups);
      }
      if (operation === 'freeze') ctx.services.metrics.freezes.observe((performance.now() - started) / 1000);
      const results: NamedResult[] = statuses.map((status, i) => ({ name: body.cgroups[i], outcome: 'done', status }));
      return json(200, { results });
    },
  };
}

export function cgroupRoutes(): Route[] {
  return [
    batchRoute('freeze'),
    batchRoute('thaw'),
    {
      // Read-only, but POST: the names travel in the body. Each cgroup answers on its own, a state
      // or an error; nothing is all or nothing about reading.
      method: 'POST',
      pattern: '/v1/state',
      readOnly: true,
      async handle(ctx): Promise<Reply> {
        refuseQuery(ctx.url);
        const body = validate(await readJsonObject(ctx.req), BATCH_FIELDS);
        const results: StateBatchReply['results'] = body.cgroups.map((name) => {
          try {
            const ref = resolveIn(name, body.hierarchy);
            return { name, status: ctx.services.control.status(ref) };
          } catch (err) {
            if (!isAgentError(err)) throw err;
            return { name, error: { code: err.code, message: err.message } };
          }
        });
        return json(200, { results });
      },
    },
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
