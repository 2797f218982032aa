// The long operations running now (GET /v1/operations: agentctl operations), and cancelling one (a
// checkpoint or restore) by its request id, for a client that wants to stop it and still read its
// answer: agentctl cancel, and agentctl on Ctrl-C. The operation's own request then ends
// with EINTR once the orchestration has put the cgroup back (a client that just hangs up cancels it
// too, but never learns how it ended).

import { AgentError } from '../../errors/index.js';
import { json, type Reply } from '../context.js';
import { refuseQuery, REQUEST_ID, expectNoBody } from '../request.js';
import type { Route } from '../router.js';

export function operationRoutes(): Route[] {
  return [
    {
      method: 'GET',
      pattern: '/v1/operations',
      async handle(ctx): Promise<Reply> {
        refuseQuery(ctx.url);
        await expectNoBody(ctx.req);
        return json(200, { operations: ctx.services.operations.views() });
      },
    },
    {
      method: 'POST',
      pattern: '/v1/operations/{requestId}/cancel',
      async handle(ctx): Promise<Reply> {
        ctx.audit.operation = 'cancel';
        refuseQuery(ctx.url);
        await expectNoBody(ctx.req);
        const requestId = ctx.params.requestId;
        if (!REQUEST_ID.test(requestId)) throw new AgentError('EINVAL', `invalid request id "${requestId.slice(0, 80)}"`);
        const op = ctx.services.operations.get(requestId);
        if (!op) throw new AgentError('ENOENT', `no operation ${requestId} is running (it may have just finished)`);
        if (op.kind === 'checkpoint') ctx.audit.cgroup = op.target;
        else ctx.audit.checkpoint = op.target;
        op.cancelledAt ??= Date.now();
        op.controller.abort(new Error(`cancelled by request ${ctx.requestId}`));
        return json(202, { requestId, kind: op.kind, target: op.target });
      },
    },
  ];
}
