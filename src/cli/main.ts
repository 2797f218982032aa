// agentctl: the operator's CLI for agentd. Global --socket, --json and --timeout; one command per
// verb; usage errors exit 2 with the same `agentctl: EINVAL: ...` line as every other failure.

import yargs, { type Argv, type CommandModule } from 'yargs';
import { hideBin } from 'yargs/helpers';
import { attachCommand } from './commands/attach.js';
import { exportCommand, importCommand, keyCommand } from './commands/archive.js';
import { checkpointCommand, restoreCommand } from './commands/checkpoint.js';
import { completionCommand } from './commands/completion.js';
import { dynamicCompletion } from './dynamic-completion.js';
import { freezeCommand, killCommand, stateCommand, thawCommand } from './commands/cgroup.js';
import { hostCommand } from './commands/host.js';
import { cancelCommand, operationsCommand } from './commands/operations.js';
import { pruneCommand } from './commands/prune.js';
import { checkpointsCommand, deleteCommand, showCommand } from './commands/images.js';
import type { GlobalArgs } from './context.js';
import { EXIT_USAGE } from './exit-codes.js';
import { DEFAULT_SOCKET, packageVersion } from '../defaults/index.js';

// The agent takes timeoutMs as whole milliseconds from 1 to one day (docs/daemon-and-cli.md); checked
// here so that a value it would refuse is reported as the option the operator typed, not as the API
// field. Rounded as the commands round it when they send it.
const MAX_TIMEOUT_SECONDS = 86_400;

function checkTimeout(timeout: number | undefined): void {
  if (timeout === undefined) return;
  if (!Number.isFinite(timeout) || Math.round(timeout * 1000) < 1 || timeout > MAX_TIMEOUT_SECONDS) {
    throw new Error(
      `--timeout must be a duration in seconds from 0.001 (1 ms) to ${MAX_TIMEOUT_SECONDS} (one day), got ${String(timeout)}`,
    );
  }
}

const COMMANDS = [
  stateCommand,
  freezeCommand,
  thawCommand,
  killCommand,
  checkpointCommand,
  restoreCommand,
  attachCommand,
  checkpointsCommand,
  showCommand,
  deleteCommand,
  exportCommand,
  importCommand,
  keyCommand,
  pruneCommand,
  operationsCommand,
  cancelCommand,
  hostCommand,
] as const;

/** The command a command line names: the first word that is one (an option's value rarely is). */
function commandOf(argv: readonly string[]): { name: string; usage: string } | undefined {
  for (const word of argv) {
    const found = COMMANDS.find((c) => String(c.command).split(' ')[0] === word);
    if (found) return { name: word, usage: String(found.command) };
  }
  return undefined;
}

/**
 * yargs' own words for a missing argument ("Not enough non-option arguments: got 0, need at least
 * 1") do not say which argument: name the command's usage line instead, and where its help is.
 */
function usageError(message: string, argv: readonly string[]): string {
  const command = commandOf(argv);
  if (command && /^Not enough non-option arguments/.test(message)) {
    return `missing argument: usage: agentctl ${command.usage} (agentctl ${command.name} --help shows its options and examples)`;
  }
  const help = command ? `agentctl ${command.name} --help` : 'agentctl --help, or agentctl <command> --help';
  return `${message}\n(run ${help})`;
}

// yargs renders the full help of the command it is about to run, every time, while the handler's
// request is on its way (cacheHelpMessage in yargs' lib/command.js), so that a handler could print
// its own help later; none of ours does. That render (cliui and string-width over every line) was
// 42 of the 246 ms a whole `agentctl state` took (node --cpu-prof; docs/bench.md, "agentctl
// start-up"). --help and usage errors render the help themselves and are not affected. If a yargs
// release renames the method this does nothing, and agentctl is only slower.
function skipHelpCache(y: Argv): Argv {
  const internal = (y as unknown as { getInternalMethods?: () => { getUsageInstance?: () => { cacheHelpMessage?: unknown } } })
    .getInternalMethods?.()
    .getUsageInstance?.();
  if (internal && typeof internal.cacheHelpMessage === 'function') internal.cacheHelpMessage = () => undefined;
  return y;
}

export function parser(argv: string[]): Argv {
  return skipHelpCache(yargs(argv))
    .scriptName('agentctl')
    .usage(
      '$0 <command> [options]\n\nControls agentd over its Unix socket: freeze, thaw, kill and checkpoint cgroups, restore checkpoints.',
    )
    .option('socket', {
      type: 'string',
      default: process.env.AGENTD_SOCKET || DEFAULT_SOCKET,
      describe: "the agent's socket (env AGENTD_SOCKET)",
      global: true,
    })
    .option('json', { type: 'boolean', default: false, describe: 'print results as JSON; no progress', global: true })
    .option('timeout', {
      type: 'number',
      describe:
        'seconds: the operation limit for freeze, kill, checkpoint and restore (passed to the agent), else how long to wait for an answer; 0.001 to 86400',
      global: true,
    })
    .check((args) => {
      checkTimeout(args.timeout);
      return true;
    })
    .command(COMMANDS as unknown as CommandModule[])
    .command(completionCommand(() => parser([])) as unknown as CommandModule)
    .example('$0 state jobs/build-42', 'THAWED, FREEZING, FROZEN or CHECKPOINTING')
    .example('$0 checkpoint jobs/build-42 --json', 'dump a cgroup; prints {"id", "dir", …}')
    .example('$0 --socket /tmp/agentd.sock host', 'talk to an agent on another socket')
    .epilogue(
      'Exit status: 0 ok, 1 other failure, 2 invalid usage or input, 3 not found, 4 busy, 5 timed out, 6 agent unreachable, 7 CRIU failed, 130 interrupted (Ctrl-C).',
    )
    .demandCommand(1, 'name a command')
    .recommendCommands()
    .strict()
    .version(packageVersion())
    .help()
    .alias('help', 'h')
    .wrap(Math.min(110, process.stdout.columns || 100))
    .fail((message, err) => {
      // Command failures are reported by their own handler (context.ts); what reaches here is usage.
      process.stderr.write(`agentctl: EINVAL: ${usageError(message ?? err?.message ?? 'invalid usage', argv)}\n`);
      process.exit(EXIT_USAGE);
    });
}

const COMPLETION_KEY = '--get-yargs-completions';

export async function main(argv: string[] = hideBin(process.argv)): Promise<void> {
  // The completion scripts ask for the words here. Checkpoint ids and cgroup names are ours to
  // complete (yargs' completion functions cannot wait for the agent: its strict parse goes on and
  // fails meanwhile); commands, options and choices are yargs'.
  const at = argv.indexOf(COMPLETION_KEY);
  if (at >= 0) {
    const words = await dynamicCompletion(argv.slice(at + 1), process.env.AGENTD_SOCKET || DEFAULT_SOCKET);
    if (words) return void process.stdout.write(words.map((w) => `${w}\n`).join(''));
  }
  await parser(argv).parseAsync();
}

export type { GlobalArgs };
