// agentctl operations | cancel <request-id>: the checkpoints and restores the agent is running now,
// and cancelling one of them from another terminal (what Ctrl-C does for agentctl's own request).

import type { CommandModule } from 'yargs';
import { call } from '../client.js';
import { action, clientOptions, type GlobalArgs } from '../context.js';
import { print, printJson, table } from '../format.js';
import type { OperationView } from '../../daemon/wire.js';

interface CancelArgs extends GlobalArgs {
  readonly 'request-id': string;
}

/** "12:01:03 (41 s ago)" for an ISO time: the clock time an operator compares with logs, and the age. */
function startedText(since: string, now = Date.now()): string {
  const at = new Date(since);
  const seconds = Math.max(0, Math.round((now - at.getTime()) / 1000));
  return `${at.toISOString().slice(11, 19)} (${seconds} s ago)`;
}

export const operationsCommand: CommandModule<GlobalArgs, GlobalArgs> = {
  command: 'operations',
  describe: 'list the checkpoints and restores the agent is running now, with their request ids',
  builder: (y) =>
    y
      .example('$0 operations', 'a table: REQUEST, KIND, CGROUP, PHASE, STARTED (UTC), PEER')
      .example('$0 operations --json', 'the API\'s answer: {"operations": [...]}'),
  handler: action(async (args: GlobalArgs) => {
    const reply = (await call(clientOptions(args), 'GET', '/v1/operations')) as { operations: OperationView[] };
    if (args.json) return printJson(reply);
    if (reply.operations.length === 0) return print('no operations running');
    print(
      table(
        ['REQUEST', 'KIND', 'CGROUP', 'PHASE', 'STARTED', 'PEER'],
        reply.operations.map((op) => [
          op.requestId,
          op.kind === 'restore' ? `restore ${op.target}` : op.kind,
          op.cgroup,
          op.cancelling ? `${op.phase} (cancelling)` : op.phase,
          startedText(op.since),
          op.peer ? `pid ${op.peer.pid} uid ${op.peer.uid}` : '-',
        ]),
      ),
    );
  }),
};

export const cancelCommand: CommandModule<GlobalArgs, CancelArgs> = {
  command: 'cancel <request-id>',
  describe: 'cancel a running checkpoint or restore (its cgroup goes back to the state it had before)',
  builder: (y) =>
    y
      .positional('request-id', { type: 'string', demandOption: true, describe: 'the REQUEST column of agentctl operations' })
      .example('$0 cancel agentctl-5f0c2a9b1e34', 'prints "cancelling checkpoint of v2:jobs/build-42 (request ...)"')
      .example('$0 cancel 0b6e2f4c-93d1-4d7a-8f0e-5a1c2b3d4e5f', 'an id the agent made (a request sent without X-Request-Id)'),
  handler: action(async (args: CancelArgs) => {
    const path = `/v1/operations/${encodeURIComponent(args['request-id'])}/cancel`;
    const reply = (await call(clientOptions(args), 'POST', path)) as { requestId: string; kind: string; target: string };
    if (args.json) return printJson(reply);
    // The agent answers at once; the operation then winds down (CRIU let end, the cgroup put back)
    // and its own client gets EINTR.
    print(`cancelling ${reply.kind} of ${reply.target} (request ${reply.requestId}); its client gets EINTR once the cgroup is put back`);
  }),
};
