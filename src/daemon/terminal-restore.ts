// What a --shell-job checkpoint means for the checkpoint and restore routes. Its job ran on a
// terminal and CRIU restores it only onto one (src/criu/terminal.ts): agentd opens a new pty, holds
// it (src/terminal) and lets a client attach to it. So a restore of such a checkpoint must ask for
// that (`attach: true`), and is refused otherwise before anything is touched; and a checkpoint
// that kills such a job says how to get it back.

import type { Manifest, RestoredTerminal, RestoreSummary } from '../checkpoint/index.js';
import { AgentError } from '../errors/index.js';
import { TerminalSession, type Size, type TerminalSessions } from '../terminal/index.js';

/** The terminal a restore with `attach` answers with: where to attach. */
export interface HeldTerminalReply {
  readonly cgroup: string;
  readonly hierarchy: string;
  readonly pid: number;
  readonly attach: string;
}

const DEFAULT_SIZE: Size = { cols: 80, rows: 24 };

/** Refuses (EINVAL) a restore whose `attach` does not fit the checkpoint: before anything is touched. */
export function checkTerminalRestore(manifest: Manifest, attach: boolean): void {
  const id = manifest.id;
  if (manifest.options.shellJob && !attach) {
    throw new AgentError(
      'EINVAL',
      `checkpoint ${id} was taken with --shell-job: its job needs a terminal to come back on; restore it with --attach ` +
        `(agentctl restore ${id} --attach; API: "attach": true), and agentd puts it on a new terminal it holds for you to attach to`,
    );
  }
  if (!manifest.options.shellJob && attach) {
    throw new AgentError(
      'EINVAL',
      `checkpoint ${id} was taken without --shell-job: its processes had no terminal, so there is nothing to attach to; restore it without --attach`,
    );
  }
  if (attach && manifest.trees.length !== 1) {
    throw new AgentError(
      'EINVAL',
      `checkpoint ${id} holds ${manifest.trees.length} process trees, each on a terminal of its own; --attach restores a job of one tree`,
    );
  }
}

/**
 * The restore hook that takes the new terminal, and `hold`, which gives it to the sessions under the
 * cgroup the restore answered with. Output written between the two (the job starts before the
 * restore answers) is kept for the first attach.
 */
export function terminalHolder(terminals: TerminalSessions, size: Size | undefined) {
  let session: TerminalSession | undefined;
  return {
    onTerminal(terminal: RestoredTerminal): void {
      const wanted = size ?? DEFAULT_SIZE;
      // Still stopped (CRIU's --leave-stopped): the job sees this size from its first instruction on.
      terminal.resize(wanted.cols, wanted.rows);
      session = new TerminalSession(terminal, wanted);
    },
    hold(summary: RestoreSummary): HeldTerminalReply {
      if (!session) throw new AgentError('EIO', `restore of ${summary.id} answered without handing over a terminal`);
      terminals.hold(session, summary.cgroup, summary.hierarchy);
      const attach = `GET /v1/cgroups/terminal?cgroup=${encodeURIComponent(summary.cgroup)}&hierarchy=${summary.hierarchy} (Upgrade: agentd-terminal/1)`;
      return { cgroup: summary.cgroup, hierarchy: summary.hierarchy, pid: session.pid, attach };
    },
  };
}

/** What a checkpoint's answer warns of: a killed job on a terminal comes back only with --attach. */
export function shellJobWarnings(id: string, options: { shellJob?: boolean; after?: string }): string[] {
  if (!options.shellJob || options.after !== 'killed') return [];
  return [
    `the job ran on a terminal (--shell-job) and is killed (--after killed): it comes back only on a new terminal agentd holds, ` +
      `with agentctl restore ${id} --attach (API: "attach": true); agentd keeps that terminal only while it runs`,
  ];
}
