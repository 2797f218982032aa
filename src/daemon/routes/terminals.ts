// The terminals agentd holds for restored shell jobs: a list, and one cgroup's. Attaching to one is
// the same path with an HTTP Upgrade (src/daemon/attach.ts); without the Upgrade it is a status.

import { json, type Reply } from '../context.js';
import { ATTACH_QUERY, TERMINAL_ROUTE, terminalOf } from '../attach.js';
import { expectNoBody, queryObject, refuseQuery, validate } from '../request.js';
import type { Route } from '../router.js';

export function terminalRoutes(): Route[] {
  return [
    {
      method: 'GET',
      pattern: '/v1/terminals',
      async handle(ctx): Promise<Reply> {
        refuseQuery(ctx.url);
        await expectNoBody(ctx.req);
        return json(200, { terminals: ctx.services.terminals.list() });
      },
    },
    {
      method: 'GET',
      pattern: TERMINAL_ROUTE,
      async handle(ctx): Promise<Reply> {
        const query = validate(queryObject(ctx.url), ATTACH_QUERY, 'query parameter');
        await expectNoBody(ctx.req);
        const target = terminalOf(query);
        return json(200, ctx.services.terminals.get(target.cgroup, target.hierarchy).status());
      },
    },
  ];
}
