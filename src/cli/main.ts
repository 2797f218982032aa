// agentctl: the operator's CLI for agentd. Global --socket, --json and --timeout; one command per
// verb; usage errors exit 2 with the same `agentctl: EINVAL: ...` line as every other failure.

import yargs from 'yargs';
import { hideBin } from 'yargs/helpers';
import { checkpointCommand, restoreCommand } from './commands/checkpoint.js';
import { freezeCommand, stateCommand, thawCommand } from './commands/cgroup.js';
import { hostCommand } from './commands/host.js';
import { checkpointsCommand, deleteCommand, showCommand } from './commands/images.js';
import type { GlobalArgs } from './context.js';
import { EXIT_USAGE } from './exit-codes.js';
import { DEFAULT_SOCKET, packageVersion } from '../defaults/index.js';

export function parser(argv: string[]) {
  return yargs(argv)
    .scriptName('agentctl')
    .usage('$0 <command> [options]\n\nControls agentd over its Unix socket: freeze, thaw and checkpoint cgroups, restore checkpoints.')
    .option('socket', { type: 'string', default: process.env.AGENTD_SOCKET || DEFAULT_SOCKET, describe: "the agent's socket (env AGENTD_SOCKET)", global: true })
    .option('json', { type: 'boolean', default: false, describe: 'print results as JSON; no progress', global: true })
    .option('timeout', {
      type: 'number',
      describe: 'seconds: the operation limit for freeze, checkpoint and restore (passed to the agent), else how long to wait for an answer',
      global: true,
    })
    .check((args) => {
      if (args.timeout !== undefined && !(Number.isFinite(args.timeout) && args.timeout > 0)) throw new Error('--timeout must be a positive number of seconds');
      return true;
    })
    .command(stateCommand)
    .command(freezeCommand)
    .command(thawCommand)
    .command(checkpointCommand)
    .command(restoreCommand)
    .command(checkpointsCommand)
    .command(showCommand)
    .command(deleteCommand)
    .command(hostCommand)
    .completion('completion', 'print a shell completion script (bash/zsh): agentctl completion >> ~/.bashrc')
    .example('$0 state jobs/build-42', 'THAWED, FREEZING, FROZEN or CHECKPOINTING')
    .example('$0 checkpoint jobs/build-42 --json', 'dump a cgroup; prints {"id", "dir", …}')
    .example('$0 --socket /tmp/agentd.sock host', 'talk to an agent on another socket')
    .epilogue('Exit status: 0 ok, 1 other failure, 2 invalid usage or input, 3 not found, 4 busy, 5 timed out, 6 agent unreachable, 7 CRIU failed.')
    .demandCommand(1, 'name a command')
    .recommendCommands()
    .strict()
    .version(packageVersion())
    .help()
    .alias('help', 'h')
    .wrap(Math.min(110, process.stdout.columns || 100))
    .fail((message, err) => {
      // Command failures are reported by their own handler (context.ts); what reaches here is usage.
      process.stderr.write(`agentctl: EINVAL: ${message ?? err?.message}\n(run agentctl --help, or agentctl <command> --help)\n`);
      process.exit(EXIT_USAGE);
    });
}

export async function main(argv: string[] = hideBin(process.argv)): Promise<void> {
  await parser(argv).parseAsync();
}

export type { GlobalArgs };
