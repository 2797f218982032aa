// agentctl checkpoint <cgroup> | restore <id>: the long operations, with live progress on a terminal.

import { resolve } from 'node:path';
import type { CommandModule } from 'yargs';
import { call } from '../client.js';
import { cancellable, EXIT_INTERRUPTED } from '../cancel.js';
import { action, clientOptions, DEFAULT_WAIT_MS, reportError, withHierarchy, withQuery, type GlobalArgs } from '../context.js';
import { cgroupTarget } from '../target.js';
import { bytes, checkpointTimings, duration, print, printJson } from '../format.js';
import { progressFor } from '../progress.js';
import { AFTER_POLICIES, PID_NAMESPACE_MODES } from '../../checkpoint/types.js';
import type { CgroupStatus, CheckpointSummary, HeldTerminalReply, RestoreSummary } from '../../daemon/wire.js';
import { AgentError } from '../../errors/index.js';
import { attachTerminal, DETACH_KEY_NAME, reportOutcome } from '../attach.js';

// When --timeout is passed on to the agent, the agent still needs a moment after it to stop CRIU and
// put the cgroup back; the client waits that much longer before it gives up.
const CLEANUP_GRACE_MS = 60_000;

interface CheckpointArgs extends GlobalArgs {
  readonly cgroup: string;
  readonly hierarchy?: 'v1' | 'v2';
  readonly after?: 'prior' | 'thawed' | 'frozen' | 'killed';
  readonly 'shell-job'?: boolean;
  readonly 'tcp-established'?: boolean;
  readonly 'file-locks'?: boolean;
  readonly 'pre-dump'?: number;
  readonly 'images-dir'?: string;
}

/**
 * The agent's answer to a cancelled operation (EINTR, or whatever failed first), then, for a
 * checkpoint, the state its cgroup is in now; exit 130 as for any command ended by Ctrl-C.
 */
async function afterCancel(args: GlobalArgs, err: unknown, cgroup?: { cgroup: string; hierarchy?: 'v1' | 'v2' }): Promise<void> {
  reportError(err);
  process.exitCode = EXIT_INTERRUPTED;
  if (!cgroup) return;
  try {
    const status = (await call(clientOptions(args), 'GET', withQuery('/v1/cgroups/state', cgroup))) as {
      cgroup: string;
      hierarchy: string;
      state: string;
    };
    process.stderr.write(`agentctl: cancelled: ${status.hierarchy}:${status.cgroup} is ${status.state}\n`);
  } catch {
    // The answer above already says what happened; the state is a courtesy.
  }
}

function timeoutMs(args: GlobalArgs): number | undefined {
  return args.timeout === undefined ? undefined : Math.round(args.timeout * 1000);
}

export const checkpointCommand: CommandModule<GlobalArgs, CheckpointArgs> = {
  command: 'checkpoint <cgroup>',
  describe: 'dump every process of a cgroup with CRIU while it is frozen; print the checkpoint',
  builder: (y) =>
    withHierarchy(y.positional('cgroup', { type: 'string', demandOption: true, describe: 'the cgroup to checkpoint' }))
      .option('after', {
        choices: AFTER_POLICIES,
        describe: 'what the cgroup becomes afterwards (default prior: the state it had before)',
      })
      .option('shell-job', { type: 'boolean', describe: 'the processes use a terminal (CRIU --shell-job)' })
      .option('tcp-established', { type: 'boolean', describe: 'dump established TCP connections (CRIU --tcp-established)' })
      .option('file-locks', { type: 'boolean', describe: 'dump file locks (CRIU --file-locks)' })
      .option('pre-dump', {
        type: 'number',
        describe:
          'copy memory N times (0-8) while the workload runs, then freeze and dump only what changed (CRIU pre-dump --track-mem; needs a kernel that tracks dirty memory)',
      })
      .option('images-dir', {
        type: 'string',
        describe:
          "image root for this checkpoint (default: the agent's); it must be one the agent allows (agentd --allow-images-dir, listed by agentctl host)",
      })
      .example('$0 checkpoint jobs/build-42', 'dump it and put it back as it was; prints the id and directory')
      .example('$0 checkpoint jobs/build-42 --after killed --json', 'dump it, then kill it; the summary as JSON ({"id","dir",…})')
      .example(
        '$0 checkpoint jobs/build-42 --images-dir /srv/checkpoints',
        'into a directory the agent was started to allow (agentd --allow-images-dir /srv/checkpoints)',
      )
      .example('$0 checkpoint --hierarchy v1 jobs/db --timeout 120', 'give up after 2 minutes (the cgroup goes back as it was)'),
  handler: action(async (given: CheckpointArgs) => {
    const args = { ...given, cgroup: await cgroupTarget(given.cgroup) };
    const body = {
      cgroup: args.cgroup,
      hierarchy: args.hierarchy,
      after: args.after,
      shellJob: args['shell-job'],
      tcpEstablished: args['tcp-established'],
      fileLocks: args['file-locks'],
      preDumps: args['pre-dump'],
      // The agent runs elsewhere: a relative directory means relative to where agentctl was run.
      imagesDir: args['images-dir'] === undefined ? undefined : resolve(args['images-dir']),
      timeoutMs: timeoutMs(args),
    };
    const progress = progressFor(args.json);
    const options = clientOptions(args, { graceMs: CLEANUP_GRACE_MS, defaultMs: null });
    // Asked first so that a Ctrl-C can say at once where the cancel puts the cgroup (the agent puts it
    // back as the checkpoint found it; one caught FREEZING was running); one request, about 1 ms.
    // --timeout is the checkpoint's own limit, not this question's: it waits as long as short requests do.
    const before = (await call(
      { socket: args.socket, timeoutMs: DEFAULT_WAIT_MS },
      'GET',
      withQuery('/v1/cgroups/state', { cgroup: args.cgroup, hierarchy: args.hierarchy }),
    )) as CgroupStatus;
    const prior = before.kernelState === 'FROZEN' ? 'FROZEN' : 'THAWED';
    const cancel = cancellable(
      options,
      () => `putting ${before.hierarchy}:${before.cgroup} back to ${prior}`,
      () => progress.done(),
    );
    let summary: CheckpointSummary & { warnings?: readonly string[] };
    try {
      const request = call(options, 'POST', '/v1/checkpoints', { body, onProgress: progress.onProgress, requestId: cancel.requestId });
      summary = (await cancel.run(request)) as CheckpointSummary & { warnings?: readonly string[] };
    } catch (err) {
      if (!cancel.cancelled()) throw err;
      return afterCancel(args, err, { cgroup: before.cgroup, hierarchy: before.hierarchy });
    } finally {
      progress.done();
    }
    if (cancel.cancelled()) process.stderr.write('agentctl: the checkpoint had finished before the cancel reached the agent\n');
    for (const warning of summary.warnings ?? []) process.stderr.write(`agentctl: warning: ${warning}\n`);
    if (args.json) return printJson(summary);
    print(
      [
        summary.id,
        `  cgroup     ${summary.hierarchy}:${summary.cgroup}`,
        `  dir        ${summary.dir}`,
        `  processes  ${summary.processes} in ${summary.trees} tree${summary.trees === 1 ? '' : 's'}`,
        `  size       ${bytes(summary.bytes)}`,
        `  timings    ${checkpointTimings(summary.timings, summary.bytes)}`,
        `  after      ${summary.after}: now ${summary.finalState}`,
      ].join('\n'),
    );
  }),
};

interface RestoreArgs extends GlobalArgs {
  readonly id: string;
  readonly cgroup?: string;
  readonly hierarchy?: 'v1' | 'v2';
  readonly pidNamespace?: 'host' | 'new';
  readonly force?: boolean;
  readonly attach?: boolean;
  readonly thawed?: boolean;
  readonly frozen?: boolean;
  readonly unit?: string | false;
}

/** The line agentctl restore prints: host pids, and with a new PID namespace what they are inside. */
export function restoreLine(summary: RestoreSummary): string {
  const trees = `${summary.trees} tree${summary.trees === 1 ? '' : 's'}, ${duration(summary.durationMs)}`;
  const where = `${summary.hierarchy}:${summary.cgroup}${summary.unit ? ` as ${summary.unit}` : ''}`;
  if (summary.pidNamespace !== 'new')
    return `restored ${summary.id} into ${where}: pids ${summary.pids.join(' ')} (${trees}), ${summary.state}`;
  const inside = summary.processes.map((p) => p.nsPid).join(' ');
  return (
    `restored ${summary.id} into ${where} in a new PID namespace (its init is pid ${summary.namespaceInit}): ` +
    `pids ${summary.pids.join(' ')}, inside the namespace ${inside} (${trees}), ${summary.state}`
  );
}

export const restoreCommand: CommandModule<GlobalArgs, RestoreArgs> = {
  command: 'restore <id>',
  describe: 'restore a checkpoint (verifying its files first) and print the restored pids',
  builder: (y) =>
    withHierarchy(
      y
        .positional('id', { type: 'string', demandOption: true, describe: 'the checkpoint id (see agentctl checkpoints)' })
        .option('cgroup', { type: 'string', describe: 'restore into this cgroup instead of the original' })
        .option('pid-namespace', {
          choices: PID_NAMESPACE_MODES,
          describe: "new: restore inside a new PID namespace, where the saved pids cannot clash with the host's (default: host)",
        })
        .option('force', { type: 'boolean', describe: "restore even when CRIU's version or the CPU differ from the dumping host's" })
        .option('attach', {
          type: 'boolean',
          describe: `a --shell-job checkpoint: put the job on a new terminal agentd holds and attach this one to it (${DETACH_KEY_NAME} detaches)`,
        })
        .option('unit', {
          type: 'string',
          describe:
            'where systemd is PID 1: make the restored processes the transient scope NAME.scope (agentd.service makes agentd-restore-ID.scope by default; --no-unit: none)',
        })
        .option('thawed', { type: 'boolean', describe: 'leave it running (default: the state it was checkpointed in)' })
        .option('frozen', { type: 'boolean', describe: 'leave it FROZEN (default: the state it was checkpointed in)' })
        .conflicts('thawed', 'frozen'),
    )
      .example('$0 restore 20261201T063940Z-4bf4d8', 'back into the cgroup it came from, THAWED or FROZEN as it was')
      .example('$0 restore 20261201T063940Z-4bf4d8 --frozen', 'restored but left FROZEN, for agentctl thaw later')
      .example('$0 restore 20261201T063940Z-4bf4d8 --cgroup jobs/copy --hierarchy v2', 'into another v2 cgroup')
      .example('$0 restore 20261201T063940Z-4bf4d8 --cgroup jobs/copy --pid-namespace new', 'a second copy while the first runs')
      .example('$0 restore 20261201T063940Z-4bf4d8 --unit build-42', 'under systemd: as build-42.scope (systemctl status build-42.scope)')
      .example(
        '$0 restore 20261201T063940Z-4bf4d8 --attach',
        `a shell job, on this terminal; ${DETACH_KEY_NAME} leaves it running (agentctl attach <cgroup>)`,
      ),
  handler: action(async (args: RestoreArgs) => {
    if (args.attach && args.json) throw new AgentError('EINVAL', '--attach puts the job on this terminal: it does not mix with --json');
    const size = args.attach && process.stdout.isTTY ? { cols: process.stdout.columns, rows: process.stdout.rows } : {};
    const after = args.thawed ? 'thawed' : args.frozen ? 'frozen' : undefined;
    const body = {
      cgroup: args.cgroup,
      hierarchy: args.hierarchy,
      timeoutMs: timeoutMs(args),
      after,
      pidNamespace: args.pidNamespace,
      force: args.force,
      unit: args.unit,
      ...(args.attach ? { attach: true, ...size } : {}),
    };
    const progress = progressFor(args.json);
    const options = clientOptions(args, { graceMs: CLEANUP_GRACE_MS, defaultMs: null });
    const cancel = cancellable(
      options,
      () => `stopping the restore of ${args.id} (what it restored so far is killed)`,
      () => progress.done(),
    );
    let summary: RestoreSummary & { terminal?: HeldTerminalReply };
    try {
      const path = `/v1/checkpoints/${encodeURIComponent(args.id)}/restore`;
      summary = (await cancel.run(
        call(options, 'POST', path, { body, onProgress: progress.onProgress, requestId: cancel.requestId }),
      )) as RestoreSummary & { terminal?: HeldTerminalReply };
    } catch (err) {
      if (!cancel.cancelled()) throw err;
      return afterCancel(args, err);
    } finally {
      progress.done();
    }
    if (cancel.cancelled()) process.stderr.write('agentctl: the restore had finished before the cancel reached the agent\n');
    if (summary.terminal) {
      const { terminal } = summary;
      // Said once attached (this terminal is raw then), so that what is typed after it goes to the job.
      const outcome = await attachTerminal(args.socket, { cgroup: terminal.cgroup, hierarchy: terminal.hierarchy as 'v1' | 'v2' }, () =>
        process.stderr.write(
          `agentctl: restored ${summary.id} into ${summary.hierarchy}:${summary.cgroup}: pid ${terminal.pid} on a terminal agentd holds; ` +
            `attached (${DETACH_KEY_NAME} detaches)\r\n`,
        ),
      );
      process.exitCode = reportOutcome(outcome);
      return;
    }
    if (args.json) return printJson(summary);
    for (const warning of summary.warnings ?? []) process.stderr.write(`agentctl: warning: ${warning}\n`);
    print(restoreLine(summary));
  }),
};
