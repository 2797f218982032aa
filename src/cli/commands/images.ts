// agentctl checkpoints | show <id> | delete <id>: the agent's image store.

import type { CommandModule } from 'yargs';
import { call } from '../client.js';
import { action, clientOptions, type GlobalArgs } from '../context.js';
import { bytes, checkpointTimings, duration, print, printJson, table } from '../format.js';
import type { CheckpointListing, FailureRecord, Manifest } from '../../daemon/wire.js';
import { processesBySubCgroup } from '../subtree.js';

interface IdArgs extends GlobalArgs {
  readonly id: string;
}

export const checkpointsCommand: CommandModule<GlobalArgs, GlobalArgs> = {
  command: 'checkpoints',
  describe: "list the agent's checkpoints (good ones, and failed ones kept for diagnosis)",
  builder: (y) =>
    y
      .example('$0 checkpoints', 'a table, oldest first, failed attempts among them by the time they began')
      .example('$0 checkpoints --json', 'the API\'s answer: {"checkpoints": [...]}'),
  handler: action(async (args: GlobalArgs) => {
    const reply = (await call(clientOptions(args), 'GET', '/v1/checkpoints')) as { checkpoints: CheckpointListing[] };
    // --json prints what the API answers, as every other command does, so one parser serves both.
    if (args.json) return printJson(reply);
    const { checkpoints } = reply;
    if (checkpoints.length === 0) return print('no checkpoints');
    print(
      table(
        ['ID', 'STATUS', 'CGROUP', 'CREATED', 'SIZE', 'PROCESSES'],
        checkpoints.map((c) => [
          c.id,
          c.error ? `${c.status} (${c.error.code})` : c.status,
          c.cgroup ? `${c.hierarchy}:${c.cgroup}` : '-',
          c.createdAt ?? '-',
          bytes(c.bytes),
          c.processes === undefined ? '-' : String(c.processes),
        ]),
      ),
    );
  }),
};

export const showCommand: CommandModule<GlobalArgs, IdArgs> = {
  command: 'show <id>',
  describe: "print a checkpoint's manifest: processes, files, timings",
  builder: (y) =>
    y
      .positional('id', { type: 'string', demandOption: true, describe: 'the checkpoint id' })
      .example('$0 show 20261201T063940Z-4bf4d8', 'a summary')
      .example('$0 show 20261201T063940Z-4bf4d8 --json', 'the whole manifest.json'),
  handler: action(async (args: IdArgs) => {
    const reply = (await call(clientOptions(args), 'GET', `/v1/checkpoints/${encodeURIComponent(args.id)}`)) as Manifest | FailureRecord;
    if (args.json) return printJson(reply);
    if ('status' in reply && reply.status === 'failed') return print(failureText(reply));
    const m = reply as Manifest;
    const size = m.files.reduce((sum, f) => sum + f.size, 0);
    const lines = [
      m.id,
      `  cgroup     ${m.hierarchy}:${m.cgroup} (was ${m.priorState})`,
      `  created    ${m.createdAt} on kernel ${m.kernel} with CRIU ${m.criuVersion}`,
      `  options    ${JSON.stringify(m.options)}`,
      `  files      ${m.files.length}, ${bytes(size)}`,
      `  timings    freeze ${duration(m.timings.freezeMs)}, ${checkpointTimings(m.timings, size)}`,
    ];
    for (const tree of m.trees) {
      const lock =
        tree.networkLock === 'skip'
          ? ', no TCP connection to lock'
          : tree.networkLock
            ? `, connections locked with ${tree.networkLock}`
            : '';
      lines.push(`  tree ${tree.index} (root ${tree.root}${lock})`);
      for (const p of tree.processes) lines.push(`    ${String(p.pid).padStart(7)} ${String(p.ppid).padStart(7)}  ${p.command}`);
    }
    lines.push(...processesBySubCgroup(m));
    print(lines.join('\n'));
  }),
};

/** A failed attempt in short: what, when, why, what was lost, and where CRIU's logs are. */
function failureText(f: FailureRecord): string {
  const lines = [
    `${f.id} (failed)`,
    `  cgroup     ${f.cgroup ? `${f.hierarchy}:${f.cgroup}` : '-'}`,
    `  attempted  ${f.startedAt ?? '-'}${f.failedAt ? `, failed ${f.failedAt}` : ''}`,
    `  error      ${f.error ? `${f.error.code}: ${f.error.message}` : 'not recorded (an attempt from before failure.json)'}`,
    `  size       ${bytes(f.bytes)} kept in ${f.dir} (CRIU's logs)`,
  ];
  for (const p of f.lost ?? [])
    lines.push(`  lost       ${p.pid} ${p.command}${p.kernel.length ? `: ${p.kernel[p.kernel.length - 1]}` : ''}`);
  return lines.join('\n');
}

export const deleteCommand: CommandModule<GlobalArgs, IdArgs> = {
  command: 'delete <id>',
  describe: 'delete a checkpoint and its image files',
  builder: (y) =>
    y
      .positional('id', { type: 'string', demandOption: true, describe: 'the checkpoint id' })
      .example('$0 delete 20261201T063940Z-4bf4d8', 'prints "deleted <id>"'),
  handler: action(async (args: IdArgs) => {
    const reply = await call(clientOptions(args), 'DELETE', `/v1/checkpoints/${encodeURIComponent(args.id)}`);
    if (args.json) printJson(reply);
    else print(`deleted ${args.id}`);
  }),
};
