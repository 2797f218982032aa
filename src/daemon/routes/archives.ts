// Archives: the agent's public key, export of a checkpoint as a signed archive, import of one. The
// work is the Archives service's (src/archive); this file validates requests and shapes replies.
// Both transfers stream: an export is written to the response as it is packed, an import is read
// from the request body as it arrives (not under the API's 64 KiB body cap, but under
// --max-import-bytes).

import type { ServerResponse } from 'node:http';
import { PassThrough } from 'node:stream';
import { ArchiveTooLarge, CONTENT_TYPE, FORMAT_VERSION } from '../../archive/index.js';
import { AgentError, isAgentError } from '../../errors/index.js';
import { json, type Reply, type RequestContext } from '../context.js';
import { errorResponse, ProtocolError } from '../http-status.js';
import { checkpointId, expectNoBody, optional, queryObject, refuseQuery, validate, type Checker } from '../request.js';
import { sendJson } from '../respond.js';
import type { RunningOperation } from '../operations.js';
import type { Route } from '../router.js';

const IMPORT_TYPES = [CONTENT_TYPE, 'application/octet-stream'];

/** A query flag: `true` or `false`, nothing else. */
const queryFlag: Checker<boolean> = (value, field) => {
  if (value === 'true') return true;
  if (value === 'false') return false;
  throw new AgentError('EINVAL', `query parameter "${field}" must be true or false`);
};

/**
 * How long a refused import's body is still read (and dropped) after the answer: the client sees
 * the answer while it is still sending, and a well-behaved one stops; one that does not is cut off.
 */
const DISCARD_MS = 30_000;

/** Answers an import at once (the body may still be arriving), then drops the rest of the body. */
function answerNow(ctx: RequestContext, err: unknown): Reply {
  const reply =
    err instanceof ArchiveTooLarge ? { status: 413, body: { error: { code: err.code, message: err.message } } } : errorResponse(err);
  const res: ServerResponse = ctx.res;
  if (!res.headersSent && !res.destroyed) sendJson(res, reply.status, reply.body);
  if (!ctx.req.complete) {
    ctx.req.resume();
    const timer = setTimeout(() => ctx.req.socket.destroy(), DISCARD_MS).unref();
    ctx.req.once('end', () => clearTimeout(timer));
    ctx.req.once('close', () => clearTimeout(timer));
  }
  return { kind: 'streamed', status: reply.status, code: reply.body.error.code };
}

export function archiveRoutes(): Route[] {
  return [
    {
      method: 'GET',
      pattern: '/v1/key',
      async handle(ctx): Promise<Reply> {
        refuseQuery(ctx.url);
        await expectNoBody(ctx.req);
        const { archives } = ctx.services;
        const key = archives.publicKey();
        return json(200, { ...key, keyFile: archives.keyFile, trustedKeysDir: archives.trustedKeysDir, formatVersion: FORMAT_VERSION });
      },
    },
    {
      method: 'GET',
      pattern: '/v1/checkpoints/{id}/archive',
      async handle(ctx): Promise<Reply> {
        ctx.audit.operation = 'export';
        refuseQuery(ctx.url);
        const id = checkpointId(ctx.params.id);
        ctx.audit.checkpoint = id;
        await expectNoBody(ctx.req);
        const { archives, operations } = ctx.services;
        // Verified and claimed before the first byte: a corrupt, failed or busy checkpoint is a plain JSON error.
        const prepared = await archives.prepareExport(id, ctx.requestId);
        const source = ctx.services.checkpointer.show(id);
        const op = operations.start('export', ctx.requestId, id, `${source.hierarchy}:${source.cgroup}`, ctx.peer);
        try {
          ctx.res.writeHead(200, {
            'Content-Type': CONTENT_TYPE,
            'Content-Disposition': `attachment; filename="${id}.agentd-archive"`,
            'X-Archive-Bytes': String(prepared.tarBytes),
            'X-Image-Bytes': String(prepared.imageBytes),
          });
          await prepared.write(ctx.res, { signal: op.controller.signal });
          return { kind: 'streamed', status: 200 };
        } catch (err) {
          // The response has begun: the client sees a cut-off archive, which no import accepts.
          ctx.res.destroy();
          return { kind: 'streamed', status: 200, code: isAgentError(err) ? err.code : 'EIO' };
        } finally {
          prepared.release();
          operations.finish(op);
        }
      },
    },
    {
      method: 'POST',
      pattern: '/v1/checkpoints/import',
      async handle(ctx): Promise<Reply> {
        ctx.audit.operation = 'import';
        const { archives, operations } = ctx.services;
        let op: RunningOperation | undefined;
        try {
          const { trust } = validate(queryObject(ctx.url), { trust: optional(queryFlag) }, 'query parameter');
          const type = (ctx.req.headers['content-type'] ?? '').split(';')[0].trim().toLowerCase();
          if (!IMPORT_TYPES.includes(type)) {
            throw new ProtocolError(
              415,
              'EINVAL',
              `an import's body is an archive: send Content-Type ${CONTENT_TYPE}, got "${type.slice(0, 100)}"`,
            );
          }
          const declared = ctx.req.headers['content-length'];
          if (declared !== undefined && Number(declared) > archives.maxImportBytes) throw new ArchiveTooLarge(archives.maxImportBytes);
          // The cgroup an import's checkpoint belongs to is known only once its manifest is read.
          op = operations.start('import', ctx.requestId, 'archive', '', ctx.peer);
          const body = new PassThrough();
          body.on('error', () => undefined); // a write after the reader gave up: the reader's own error is the answer
          // The request itself is never handed to the reader: a refusal must leave it readable, so
          // that the rest of the body can be dropped while the answer goes out.
          ctx.req.pipe(body);
          const signal = op.controller.signal;
          const onClose = () => {
            if (!ctx.req.complete) op?.controller.abort(new Error('the client went away during the import'));
          };
          ctx.req.once('close', onClose);
          try {
            const summary = await archives.import(body, { uid: ctx.peer?.uid, trust: trust ?? false }, { signal });
            ctx.audit.checkpoint = summary.id;
            return json(201, summary);
          } finally {
            ctx.req.off('close', onClose);
            ctx.req.unpipe(body);
          }
        } catch (err) {
          return answerNow(ctx, err);
        } finally {
          if (op) operations.finish(op);
        }
      },
    },
  ];
}
