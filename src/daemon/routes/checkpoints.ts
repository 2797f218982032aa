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
  pidNamespace,
  readJsonObject,
  refuseQuery,
  required,
  validate,
  expectNoBody,
  text,
} from '../request.js';
import type { Route } from '../router.js';
import { checkTerminalRestore, shellJobWarnings, terminalHolder } from '../terminal-restore.js';
import { parseSize } from '../../terminal/index.js';
import { restoreScopeName } from '../../systemd/index.js';

const CHECKPOINT_FIELDS = {
  cgroup: required(text),
  hierarchy: optional(hierarchy),
  after: optional(afterPolicy),
  shellJob: optional(flag),
  tcpEstablished: optional(flag),
  fileLocks: optional(flag),
  preDumps: optional(preDumpCount),
  timeoutMs: optional(timeoutMs),
  imagesDir: optional(absolutePath),
};

/** How many pre-dumps (src/checkpoint/pre-dump.ts): a whole number from 0 to 8. */
function preDumpCount(value: unknown, field: string): number {
  if (typeof value !== 'number' || !Number.isInteger(value) || value < 0 || value > 8) {
    throw new AgentError('EINVAL', `"${field}" must be a whole number from 0 to 8`);
  }
  return value;
}

/** A terminal dimension in a body: checked with its partner by parseSize below. */
const dimension = (value: unknown, field: string): number => {
  if (typeof value !== 'number' || !Number.isInteger(value) || value < 1 || value > 10_000) {
    throw new AgentError('EINVAL', `"${field}" must be a whole number from 1 to 10000`);
  }
  return value;
};

const RESTORE_FIELDS = {
  cgroup: optional(text),
  hierarchy: optional(hierarchy),
  timeoutMs: optional(timeoutMs),
  /** `host` (the default) or `new`: restore inside a new PID namespace (docs/pid-namespace.md). */
  pidNamespace: optional(pidNamespace),
  /** Restore even when CRIU's version or the CPU differ from the dumping host's. */
  force: optional(flag),
  // A --shell-job checkpoint: put the job on a new terminal agentd holds (src/daemon/terminal-restore.ts), of this size.
  attach: optional(flag),
  cols: optional(dimension),
  rows: optional(dimension),
  after: optional(restorePolicy),
  /** The systemd scope the restored processes become (NAME or NAME.scope), or false for none. */
  unit: optional(scopeUnit),
};

/** A restore's `unit`: a name (checked in full by src/systemd) or false. */
function scopeUnit(value: unknown, field: string): string | false {
  if (value === false) return false;
  if (typeof value !== 'string' || value === '') throw new AgentError('EINVAL', `"${field}" must be a scope unit name, or false for none`);
  return text(value, field);
}

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
          const warnings = [...(summary.warnings ?? []), ...shellJobWarnings(summary.id, options)];
          return warnings.length > 0 ? { ...summary, warnings } : summary;
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
        const { attach, cols, rows, ...body } = validate(await readJsonObject(ctx.req), RESTORE_FIELDS);
        if (body.hierarchy && !body.cgroup) {
          throw new AgentError('EINVAL', '"hierarchy" names the hierarchy of a target "cgroup"; give "cgroup" too, or neither');
        }
        const size = parseSize(cols, rows);
        if ((cols !== undefined || rows !== undefined) && !(size && attach)) {
          throw new AgentError(
            'EINVAL',
            '"cols" and "rows" are the size of the terminal an "attach" restore opens: give both, with "attach": true',
          );
        }
        // A malformed scope name is a plain 400 too (systemd and the rest are asked inside the restore).
        if (typeof body.unit === 'string') restoreScopeName(id, body.unit);
        if (body.cgroup) ctx.audit.cgroup = body.cgroup;
        const { checkpointer, metrics, terminals } = ctx.services;
        // Refused before anything is touched: a --shell-job image without a terminal to go on, or the other way round.
        checkTerminalRestore(checkpointer.show(id), attach === true);
        // A plain 409 before any progress stream starts; restore() itself claims the checkpoint.
        checkpointer.refuseIfInUse(id);
        const holder = attach ? terminalHolder(terminals, size) : undefined;
        // Where it restores to, as the client named it (a new target cgroup does not exist yet).
        const manifest = checkpointer.show(id);
        const into = `${body.hierarchy ?? manifest.hierarchy}:${body.cgroup ?? manifest.cgroup}`;
        return runLongOperation(ctx, 'restore', id, into, 200, async (hooks) => {
          const summary = await checkpointer.restore(
            id,
            { ...defined(body), requestId: ctx.requestId },
            holder ? { ...hooks, onTerminal: (t) => holder.onTerminal(t) } : hooks,
          );
          ctx.audit.cgroup = `${summary.hierarchy}:${summary.cgroup}`;
          metrics.restores.observe(summary.durationMs / 1000);
          return holder ? { ...summary, terminal: holder.hold(summary) } : summary;
        });
      },
    },
  ];
}
