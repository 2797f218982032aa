// agentctl attach <cgroup>: the user's terminal connected to a shell job's, which agentd holds since
// `agentctl restore <id> --attach` (src/cli/attach.ts).

import type { CommandModule } from 'yargs';
import { action, withHierarchy, type GlobalArgs } from '../context.js';
import { attachTerminal, DETACH_KEY_NAME, reportOutcome } from '../attach.js';

interface AttachArgs extends GlobalArgs {
  readonly cgroup: string;
  readonly hierarchy?: 'v1' | 'v2';
  readonly 'take-over'?: boolean;
}

export const attachCommand: CommandModule<GlobalArgs, AttachArgs> = {
  command: 'attach <cgroup>',
  describe: `connect this terminal to the shell job agentd holds a terminal for (${DETACH_KEY_NAME} detaches; the job runs on)`,
  builder: (y) =>
    withHierarchy(y.positional('cgroup', { type: 'string', demandOption: true, describe: 'the cgroup the job was restored into' }))
      .option('take-over', { type: 'boolean', describe: 'detach the client attached now, if any, and attach this one' })
      .example('$0 attach jobs/shell-7', `back to a job restored with --attach; ${DETACH_KEY_NAME} leaves it again`)
      .example('$0 attach jobs/shell-7 --take-over', 'from another terminal, while a forgotten session is still attached'),
  handler: action(async (args: AttachArgs) => {
    const outcome = await attachTerminal(
      args.socket,
      { cgroup: args.cgroup, hierarchy: args.hierarchy, takeOver: args['take-over'] },
      (event) =>
        process.stderr.write(
          `agentctl: attached to ${event.hierarchy}:${event.cgroup} (pid ${event.pid}); ${DETACH_KEY_NAME} detaches\r\n`,
        ),
    );
    process.exitCode = reportOutcome(outcome);
  }),
};
