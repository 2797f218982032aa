// agentctl state | freeze | thaw <cgroup...> | kill <cgroup>: the freezer state of cgroups, through
// the agent's lock. One cgroup is one request to its /v1/cgroups/ route; several are one request
// to POST /v1/state, /v1/freeze or /v1/thaw, where a freeze or thaw is all or nothing
// (docs/daemon-and-cli.md, "Many cgroups at once").

import type { CommandModule } from 'yargs';
import { AgentError, isAgentError } from '../../errors/index.js';
import { call } from '../client.js';
import { action, clientOptions, withHierarchy, withQuery, type GlobalArgs } from '../context.js';
import { cgroupTarget } from '../target.js';
import { print, printJson, table } from '../format.js';
import type { BatchReply, CgroupStatus, StateBatchReply } from '../../daemon/wire.js';
import { stateLine } from '../subtree.js';

interface CgroupArgs extends GlobalArgs {
  readonly cgroup: string;
  readonly hierarchy?: 'v1' | 'v2';
}

interface CgroupsArgs extends GlobalArgs {
  readonly cgroup: string[];
  readonly hierarchy?: 'v1' | 'v2';
}

/** Every name as the agent's `cgroup` field (unit names looked up, all at once). */
function targets(names: readonly string[]): Promise<string[]> {
  return Promise.all(names.map((name) => cgroupTarget(name)));
}

/** `NAME  STATE` lines for many cgroups, in the order given. */
function stateTable(rows: { name: string; state: string }[]): string {
  return table(
    ['CGROUP', 'STATE'],
    rows.map((r) => [r.name, r.state]),
  );
}

/**
 * POST /v1/freeze or /v1/thaw for several cgroups. A refusal is the failing cgroup's error (and
 * exit status); with --json its whole body, every cgroup's outcome included, goes to stdout as well.
 */
async function changeMany(args: CgroupsArgs, operation: 'freeze' | 'thaw'): Promise<void> {
  const body = {
    cgroups: await targets(args.cgroup),
    hierarchy: args.hierarchy,
    timeoutMs: operation === 'freeze' && args.timeout !== undefined ? Math.round(args.timeout * 1000) : undefined,
  };
  const options = operation === 'freeze' ? clientOptions(args, { graceMs: 5000 }) : clientOptions(args);
  let reply: BatchReply;
  try {
    reply = (await call(options, 'POST', `/v1/${operation}`, { body })) as BatchReply;
  } catch (err) {
    if (args.json && isAgentError(err) && err.details) printJson({ error: err.toJSON() });
    throw err;
  }
  if (args.json) printJson(reply);
  else print(stateTable(reply.results.map((r, i) => ({ name: args.cgroup[i], state: r.status?.state ?? r.outcome }))));
}

function show(args: GlobalArgs, status: unknown): void {
  if (args.json) printJson(status);
  else print((status as CgroupStatus).state);
}

export const stateCommand: CommandModule<GlobalArgs, CgroupsArgs> = {
  command: 'state <cgroup..>',
  describe: 'print the state of cgroups (THAWED, FREEZING, FROZEN or CHECKPOINTING) and how many processes each and its subtree hold',
  builder: (y) =>
    withHierarchy(
      y.positional('cgroup', {
        type: 'string',
        array: true,
        demandOption: true,
        describe:
          'path relative to the hierarchy root, an absolute cgroup directory, or a systemd unit (NAME.service, .scope, .slice); several in one request',
      }),
    )
      .example('$0 state jobs/build-42', 'prints "FROZEN  4 processes in the subtree, 1 in the cgroup itself", for instance')
      .example('$0 state build-42.service', 'the cgroup systemd runs that unit in')
      .example('$0 state --hierarchy v1 jobs/build-42 --json', '{"cgroup":…,"hierarchy":"v1","path":…,"state":…}')
      .example('$0 state jobs/a jobs/b --json', 'one request; {"results":[{"name":"jobs/a","status":{…}},…]}'),
  handler: action(async (args: CgroupsArgs) => {
    if (args.cgroup.length === 1) {
      const path = withQuery('/v1/cgroups/state', { cgroup: await cgroupTarget(args.cgroup[0]), hierarchy: args.hierarchy });
      const status = (await call(clientOptions(args), 'GET', path)) as CgroupStatus;
      if (args.json) printJson(status);
      else print(stateLine(status));
      return;
    }
    const body = { cgroups: await targets(args.cgroup), hierarchy: args.hierarchy };
    const reply = (await call(clientOptions(args), 'POST', '/v1/state', { body })) as StateBatchReply;
    if (args.json) printJson(reply);
    else {
      print(
        table(
          ['CGROUP', 'STATE'],
          reply.results.map((r, i) => [args.cgroup[i], r.status ? stateLine(r.status) : `${r.error?.code}: ${r.error?.message}`]),
        ),
      );
    }
    // Every state is printed; the exit status is the first failure's, as if it had been asked alone.
    const failed = reply.results.find((r) => r.error);
    if (failed?.error) throw new AgentError(failed.error.code, failed.error.message);
  }),
};

export const freezeCommand: CommandModule<GlobalArgs, CgroupsArgs> = {
  command: 'freeze <cgroup..>',
  describe:
    'freeze every process of cgroups and print the new state; several cgroups are frozen together, all or none (on a failure the others are thawed again)',
  builder: (y) =>
    withHierarchy(y.positional('cgroup', { type: 'string', array: true, demandOption: true, describe: 'the cgroups to freeze' }))
      .example('$0 freeze jobs/build-42', 'prints FROZEN once the kernel says so')
      .example('$0 freeze /sys/fs/cgroup/freezer/jobs/build-42 --timeout 2', 'a v1 cgroup, giving up (and thawing) after 2 s')
      .example('$0 freeze jobs/a jobs/b jobs/c', 'one request: all three FROZEN, or none (the failing one is named)'),
  handler: action(async (args: CgroupsArgs) => {
    if (args.cgroup.length > 1) return changeMany(args, 'freeze');
    const body = {
      cgroup: await cgroupTarget(args.cgroup[0]),
      hierarchy: args.hierarchy,
      timeoutMs: args.timeout === undefined ? undefined : Math.round(args.timeout * 1000),
    };
    show(args, await call(clientOptions(args, { graceMs: 5000 }), 'POST', '/v1/cgroups/freeze', { body }));
  }),
};

export const thawCommand: CommandModule<GlobalArgs, CgroupsArgs> = {
  command: 'thaw <cgroup..>',
  describe: 'thaw frozen cgroups and print the new state (refused while one is CHECKPOINTING); several are thawed together, all or none',
  builder: (y) =>
    withHierarchy(y.positional('cgroup', { type: 'string', array: true, demandOption: true, describe: 'the cgroups to thaw' }))
      .example('$0 thaw jobs/build-42', 'prints THAWED')
      .example('$0 thaw --hierarchy v2 jobs/build-42 --json', 'the full state as JSON')
      .example('$0 thaw jobs/a jobs/b', 'one request: both THAWED, or neither'),
  handler: action(async (args: CgroupsArgs) => {
    if (args.cgroup.length > 1) return changeMany(args, 'thaw');
    show(
      args,
      await call(clientOptions(args), 'POST', '/v1/cgroups/thaw', {
        body: { cgroup: await cgroupTarget(args.cgroup[0]), hierarchy: args.hierarchy },
      }),
    );
  }),
};

export const killCommand: CommandModule<GlobalArgs, CgroupArgs> = {
  command: 'kill <cgroup>',
  describe:
    'kill every process of a cgroup and of the cgroups below it, frozen or not; wait until they are gone (refused while it is CHECKPOINTING)',
  builder: (y) =>
    withHierarchy(y.positional('cgroup', { type: 'string', demandOption: true, describe: 'the cgroup to empty' }))
      .example('$0 kill jobs/build-42', 'prints "killed v2:jobs/build-42: no process left, THAWED"')
      .example('$0 kill jobs/build-42 --timeout 5 --json', 'give up after 5 s; the resulting state as JSON'),
  handler: action(async (args: CgroupArgs) => {
    const body = {
      cgroup: await cgroupTarget(args.cgroup),
      hierarchy: args.hierarchy,
      timeoutMs: args.timeout === undefined ? undefined : Math.round(args.timeout * 1000),
    };
    const status = (await call(clientOptions(args, { graceMs: 5000 }), 'POST', '/v1/cgroups/kill', { body })) as CgroupStatus;
    if (args.json) printJson(status);
    else print(`killed ${status.hierarchy}:${status.cgroup}: no process left, ${status.state}`);
  }),
};
