// agentctl completion [bash|zsh|fish]: a shell completion script. yargs writes the bash and zsh ones
// (it picks between them by $SHELL, so the chosen shell is put there while it writes); fish's is our
// own, since yargs' fish script passes the words without the program name, which its own completer
// then reads as a command. Every script asks `agentctl --get-yargs-completions <words>` for the words.

import type { Argv, CommandModule } from 'yargs';
import type { GlobalArgs } from '../context.js';
import { print } from '../format.js';

export const SHELLS = ['bash', 'zsh', 'fish'] as const;
export type Shell = (typeof SHELLS)[number];

interface CompletionArgs extends GlobalArgs {
  readonly shell?: Shell;
}

/** The shell of $SHELL when it is one of ours, else bash. */
function loginShell(): Shell {
  const name = (process.env.SHELL ?? '').split('/').pop() ?? '';
  return (SHELLS as readonly string[]).includes(name) ? (name as Shell) : 'bash';
}

function fishScript(): string {
  return [
    '# agentctl completion for fish: agentctl completion fish > ~/.config/fish/completions/agentctl.fish',
    'function __agentctl_complete',
    '    # Every word typed so far, the program name first, as the bash and zsh scripts pass them.',
    '    set -l words (commandline -opc) (commandline -ct)',
    '    env SHELL=fish agentctl --get-yargs-completions $words',
    'end',
    "complete -c agentctl -f -a '(__agentctl_complete)'",
  ].join('\n');
}

/** The script for `shell`; `generator` is a fresh agentctl parser, whose completion yargs writes. */
export function completionScript(shell: Shell, generator: () => Argv): void {
  if (shell === 'fish') return print(fishScript());
  const saved = { SHELL: process.env.SHELL, ZSH_NAME: process.env.ZSH_NAME };
  process.env.SHELL = `/bin/${shell}`;
  delete process.env.ZSH_NAME;
  try {
    // Typed loosely: yargs' types leave out the arguments its showCompletionScript takes.
    (generator() as unknown as { showCompletionScript(name: string, command: string): void }).showCompletionScript(
      'agentctl',
      `completion ${shell}`,
    );
  } finally {
    for (const [key, value] of Object.entries(saved)) {
      if (value === undefined) delete process.env[key];
      else process.env[key] = value;
    }
  }
}

export function completionCommand(generator: () => Argv): CommandModule<GlobalArgs, CompletionArgs> {
  return {
    command: 'completion [shell]',
    describe: 'print a shell completion script (bash, zsh or fish; default: the shell of $SHELL, else bash)',
    builder: (y) =>
      y
        .positional('shell', { choices: SHELLS, describe: 'the shell to complete for' })
        .example('$0 completion bash >> ~/.bashrc', 'bash')
        .example('$0 completion zsh > "${fpath[1]}/_agentctl"', 'zsh')
        .example('$0 completion fish > ~/.config/fish/completions/agentctl.fish', 'fish'),
    handler: (args: CompletionArgs) => completionScript(args.shell ?? loginShell(), generator),
  };
}
