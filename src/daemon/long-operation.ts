// Running a checkpoint or restore for a request: registered with its AbortController (so SIGTERM
// and a client that hangs up cancel it cleanly), streamed as NDJSON when the client asked for it,
// answered as one JSON document otherwise.

import type { OperationHooks, ProgressEvent } from '../checkpoint/index.js';
import type { Reply, RequestContext } from './context.js';
import type { OperationKind } from './operations.js';
import { ProgressStream, wantsStream } from './streaming.js';

export async function runLongOperation<T>(
  ctx: RequestContext,
  kind: OperationKind,
  target: string,
  cgroup: string,
  successStatus: number,
  run: (hooks: OperationHooks) => Promise<T>,
): Promise<Reply> {
  const { operations } = ctx.services;
  const op = operations.start(kind, ctx.requestId, target, cgroup, ctx.peer);
  const onProgress = (event: ProgressEvent) => (op.phase = event.stage);
  // 'close' before the reply is finished means the client went away: nobody wants the result.
  const onClose = () => {
    if (!ctx.res.writableFinished) op.controller.abort(new Error('the client disconnected'));
  };
  ctx.res.on('close', onClose);
  try {
    if (!wantsStream(ctx.req)) {
      const result = await run({ signal: op.controller.signal, onProgress });
      return { kind: 'json', status: successStatus, body: result };
    }
    const stream = new ProgressStream(ctx.res, { 'X-Request-Id': ctx.requestId });
    try {
      const result = await run({
        signal: op.controller.signal,
        onProgress: (event) => {
          onProgress(event);
          stream.progress(event);
        },
      });
      stream.result(successStatus, result);
      return { kind: 'streamed', status: successStatus };
    } catch (err) {
      const reply = stream.error(err);
      return { kind: 'streamed', status: reply.status, code: reply.body.error.code };
    }
  } finally {
    ctx.res.off('close', onClose);
    operations.finish(op);
  }
}
