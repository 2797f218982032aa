// agentctl state | freeze | thaw | kill <cgroup>: the freezer state of one cgroup, through the agent's lock.

import type { CommandModule } from 'yargs';
import { call } from '../client.js';
import { action, clientOptions, withHierarchy, withQuery, type GlobalArgs } from '../context.js';
import { cgroupTarget } from '../target.js';
import { print, printJson } from '../format.js';
import type { CgroupStatus } from '../../daemon/wire.js';
import { stateLine } from '../subtree.js';

interface CgroupArgs extends GlobalArgs {
  readonly cgroup: string;
  readonly hierarchy?: 'v1' | 'v2';
}

function show(args: GlobalArgs, status: unknown): void {
  if (args.json) printJson(status);
  else print((status as CgroupStatus).state);
}

export const stateCommand: CommandModule<GlobalArgs, CgroupArgs> = {
  command: 'state <cgroup>',
  describe: 'print the state of a cgroup (THAWED, FREEZING, FROZEN or CHECKPOINTING) and how many processes it and its subtree hold',
  builder: (y) =>
    withHierarchy(
      y.positional('cgroup', {
        type: 'string',
        demandOption: true,
        describe: 'path relative to the hierarchy root, an absolute cgroup directory, or a systemd unit (NAME.service, .scope, .slice)',
      }),
    )
      .example('$0 state jobs/build-42', 'prints "FROZEN  4 processes in the subtree, 1 in the cgroup itself", for instance')
      .example('$0 state build-42.service', 'the cgroup systemd runs that unit in')
      .example('$0 state --hierarchy v1 jobs/build-42 --json', '{"cgroup":…,"hierarchy":"v1","path":…,"state":…}'),
  handler: action(async (args: CgroupArgs) => {
    const path = withQuery('/v1/cgroups/state', { cgroup: await cgroupTarget(args.cgroup), hierarchy: args.hierarchy });
    const status = (await call(clientOptions(args), 'GET', path)) as CgroupStatus;
    if (args.json) printJson(status);
    else print(stateLine(status));
  }),
};

export const freezeCommand: CommandModule<GlobalArgs, CgroupArgs> = {
  command: 'freeze <cgroup>',
  describe: 'freeze every process of a cgroup and print the new state',
  builder: (y) =>
    withHierarchy(y.positional('cgroup', { type: 'string', demandOption: true, describe: 'the cgroup to freeze' }))
      .example('$0 freeze jobs/build-42', 'prints FROZEN once the kernel says so')
      .example('$0 freeze /sys/fs/cgroup/freezer/jobs/build-42 --timeout 2', 'a v1 cgroup, giving up (and thawing) after 2 s'),
  handler: action(async (args: CgroupArgs) => {
    const body = {
      cgroup: await cgroupTarget(args.cgroup),
      hierarchy: args.hierarchy,
      timeoutMs: args.timeout === undefined ? undefined : Math.round(args.timeout * 1000),
    };
    show(args, await call(clientOptions(args, { graceMs: 5000 }), 'POST', '/v1/cgroups/freeze', { body }));
  }),
};

export const thawCommand: CommandModule<GlobalArgs, CgroupArgs> = {
  command: 'thaw <cgroup>',
  describe: 'thaw a frozen cgroup and print the new state (refused while it is CHECKPOINTING)',
  builder: (y) =>
    withHierarchy(y.positional('cgroup', { type: 'string', demandOption: true, describe: 'the cgroup to thaw' }))
      .example('$0 thaw jobs/build-42', 'prints THAWED')
      .example('$0 thaw --hierarchy v2 jobs/build-42 --json', 'the full state as JSON'),
  handler: action(async (args: CgroupArgs) => {
    show(
      args,
      await call(clientOptions(args), 'POST', '/v1/cgroups/thaw', {
        body: { cgroup: await cgroupTarget(args.cgroup), hierarchy: args.hierarchy },
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
