// Checkpoints: create (dump a cgroup), list, show a manifest, delete, restore. The work is the
// Checkpointer's (src/checkpoint); this file only validates requests and shapes replies.

import { describeCgroup, resolveCgroup } from '../../cgroup/index.js';
import { AgentError } from '../../errors/index.js';
import { json, type Reply, type RequestContext } from '../context.js';
import { runLongOperation } from '../long-operation.js';
import {
  absolutePath,
  afterPolicy,
  restorePolicy,
  checkpointId,
  flag,
  hierarchy,
  timeoutMs,
  wholeMs,
  optional,
  readJsonObject,
  refuseQuery,
  required,
  validate,
  expectNoBody,
  text,
} from '../request.js';
import type { Route } from '../router.js';

const CHECKPOINT_FIELDS = {
  cgroup: required(text),
  hierarchy: optional(hierarchy),
  after: optional(afterPolicy),
  shellJob: optional(flag),
  tcpEstablished: optional(flag),
  fileLocks: optional(flag),
  timeoutMs: optional(timeoutMs),
  imagesDir: optional(absolutePath),
};

const RESTORE_FIELDS = {
  cgroup: optional(text),
  hierarchy: optional(hierarchy),
  timeoutMs: optional(timeoutMs),
  after: optional(restorePolicy),
};

const PRUNE_FIELDS = { failed: optional(flag), olderThanMs: optional(wholeMs), dryRun: optional(flag) };

/** Drops undefined values, so that the orchestration sees only what the client set. */
function defined<T extends Record<string, unknown>>(value: T): Partial<T> {
  return Object.fromEntries(Object.entries(value).filter(([, v]) => v !== undefined)) as Partial<T>;
}

/** A request acting on one checkpoint: audited as `operation` on it, no query parameters; its id. */
function checkpointRequest(ctx: RequestContext, operation: string): string {
  ctx.audit.operation = operation;
  refuseQuery(ctx.url);
  const id = checkpointId(ctx.params.id);
  ctx.audit.checkpoint = id;
  return id;
}

export function checkpointRoutes(): Route[] {
  return [
    {
      method: 'POST',
      pattern: '/v1/checkpoints',
      async handle(ctx): Promise<Reply> {
        ctx.audit.operation = 'checkpoint';
        refuseQuery(ctx.url);
        const { cgroup, hierarchy: h, ...options } = validate(await readJsonObject(ctx.req), CHECKPOINT_FIELDS);
        const ref = resolveCgroup(cgroup, h ? { hierarchy: h } : {});
        const target = describeCgroup(ref);
        ctx.audit.cgroup = target;
        const { checkpointer, metrics } = ctx.services;
        // Refused before the operation (and any progress stream) starts: a plain 403, nothing touched.
        checkpointer.checkImagesDir(options.imagesDir);
        return runLongOperation(ctx, 'checkpoint', target, target, 201, async (hooks) => {
          const summary = await checkpointer.checkpoint(ref, { ...defined(options), requestId: ctx.requestId }, hooks);
          ctx.audit.checkpoint = summary.id;
          metrics.checkpoints.observe(summary.timings.totalMs / 1000);
          metrics.frozenWindows.observe(summary.timings.frozenWindowMs / 1000);
          return summary;
        });
      },
    },
    {
      method: 'GET',
      pattern: '/v1/checkpoints',
      async handle(ctx): Promise<Reply> {
        refuseQuery(ctx.url);
        await expectNoBody(ctx.req);
        return json(200, { checkpoints: ctx.services.checkpointer.list() });
      },
    },
    {
      method: 'GET',
      pattern: '/v1/checkpoints/{id}',
      async handle(ctx): Promise<Reply> {
        refuseQuery(ctx.url);
        const id = checkpointId(ctx.params.id);
        await expectNoBody(ctx.req);
        return json(200, ctx.services.checkpointer.describe(id));
      },
    },
    {
      method: 'POST',
      pattern: '/v1/checkpoints/prune',
      async handle(ctx): Promise<Reply> {
        ctx.audit.operation = 'prune';
        refuseQuery(ctx.url);
        const body = validate(await readJsonObject(ctx.req), PRUNE_FIELDS);
        if (!body.failed && body.olderThanMs === undefined) {
          throw new AgentError('EINVAL', 'prune removes nothing unless asked: give "failed": true, "olderThanMs", or both');
        }
        return json(200, await ctx.services.checkpointer.prune(defined(body)));
      },
    },
    {
      method: 'DELETE',
      pattern: '/v1/checkpoints/{id}',
      async handle(ctx): Promise<Reply> {
        const id = checkpointRequest(ctx, 'delete');
        await expectNoBody(ctx.req);
        await ctx.services.checkpointer.delete(id);
        return json(200, { deleted: id });
      },
    },
    {
      method: 'POST',
      pattern: '/v1/checkpoints/{id}/restore',
      async handle(ctx): Promise<Reply> {
        const id = checkpointRequest(ctx, 'restore');
        const body = validate(await readJsonObject(ctx.req), RESTORE_FIELDS);
        if (body.hierarchy && !body.cgroup) {
          throw new AgentError('EINVAL', '"hierarchy" names the hierarchy of a target "cgroup"; give "cgroup" too, or neither');
        }
        if (body.cgroup) ctx.audit.cgroup = body.cgroup;
        const { checkpointer, metrics } = ctx.services;
        // A --shell-job image is restored onto a new terminal that someone must hold and read; the
        // API has no way to hand a terminal to its client, and one held by agentd would hang up on
        // the job when agentd restarts. Refused before anything is touched.
        const manifest = checkpointer.show(id);
        if (manifest.options.shellJob) {
          throw new AgentError(
            'EINVAL',
            `checkpoint ${id} was taken with --shell-job: restoring it needs a terminal to put the job on, which the agent's API cannot provide`,
          );
        }
        // A plain 409 before any progress stream starts; restore() itself claims the checkpoint.
        checkpointer.refuseIfInUse(id);
        // Where it restores to, as the client named it (a new target cgroup does not exist yet).
        const into = `${body.hierarchy ?? manifest.hierarchy}:${body.cgroup ?? manifest.cgroup}`;
        return runLongOperation(ctx, 'restore', id, into, 200, async (hooks) => {
          const summary = await checkpointer.restore(id, { ...defined(body), requestId: ctx.requestId }, hooks);
          ctx.audit.cgroup = `${summary.hierarchy}:${summary.cgroup}`;
          metrics.restores.observe(summary.durationMs / 1000);
          return summary;
        });
      },
    },
  ];
}
