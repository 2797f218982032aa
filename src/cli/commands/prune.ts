// agentctl prune [--failed] [--older-than DURATION] [--dry-run]: removes old checkpoints and failed
// attempts through the agent (POST /v1/checkpoints/prune), never one a running restore uses.

import type { CommandModule } from 'yargs';
import { AgentError } from '../../errors/index.js';
import { call } from '../client.js';
import { action, clientOptions, type GlobalArgs } from '../context.js';
import { bytes, print, printJson, table } from '../format.js';
import type { PruneResult } from '../../daemon/wire.js';

interface PruneArgs extends GlobalArgs {
  readonly failed?: boolean;
  readonly 'older-than'?: string;
  readonly 'dry-run'?: boolean;
}

const UNIT_MS: Readonly<Record<string, number>> = { s: 1000, m: 60_000, h: 3_600_000, d: 86_400_000, w: 7 * 86_400_000 };

/** "90s", "15m", "12h", "7d", "2w", or a sum of them ("1d12h"), in milliseconds; EINVAL otherwise. */
export function parseDuration(text: string): number {
  const parts = [...text.matchAll(/(\d+)([smhdw])/g)];
  if (!/^(\d+[smhdw])+$/.test(text) || parts.length === 0) {
    throw new AgentError('EINVAL', `--older-than takes a duration such as 90s, 15m, 12h, 7d, 2w or 1d12h, got "${text}"`);
  }
  return parts.reduce((sum, [, n, unit]) => sum + Number(n) * UNIT_MS[unit], 0);
}

export const pruneCommand: CommandModule<GlobalArgs, PruneArgs> = {
  command: 'prune',
  describe: 'remove failed attempts and/or checkpoints older than a duration (never one being restored)',
  builder: (y) =>
    y
      .option('failed', { type: 'boolean', describe: 'only failed attempts' })
      .option('older-than', { type: 'string', describe: 'only those created at least this long ago: 90s, 15m, 12h, 7d, 2w, 1d12h' })
      .option('dry-run', { type: 'boolean', describe: 'print what would be removed; remove nothing' })
      .check((args) => {
        if (!args.failed && args['older-than'] === undefined) throw new Error('prune needs --failed, --older-than DURATION, or both');
        return true;
      })
      .example('$0 prune --failed', 'remove every failed attempt (their CRIU logs go with them)')
      .example('$0 prune --older-than 7d --dry-run', 'list the checkpoints older than a week, remove nothing')
      .example('$0 prune --failed --older-than 1d --json', 'the API\'s answer: {"dryRun", "removed": [...], "kept": [...]}'),
  handler: action(async (args: PruneArgs) => {
    const body = {
      failed: args.failed || undefined,
      olderThanMs: args['older-than'] === undefined ? undefined : parseDuration(args['older-than']),
      dryRun: args['dry-run'] || undefined,
    };
    const reply = (await call(clientOptions(args), 'POST', '/v1/checkpoints/prune', { body })) as PruneResult;
    if (args.json) return printJson(reply);
    const verb = reply.dryRun ? 'would remove' : 'removed';
    if (reply.removed.length === 0) print(`${verb} nothing`);
    else {
      print(`${verb} ${reply.removed.length}:`);
      print(
        table(
          ['ID', 'STATUS', 'CGROUP', 'CREATED', 'SIZE'],
          reply.removed.map((c) => [c.id, c.status, c.cgroup ? `${c.hierarchy}:${c.cgroup}` : '-', c.createdAt ?? '-', bytes(c.bytes)]),
        ),
      );
    }
    for (const k of reply.kept) print(`kept ${k.id}: ${k.reason}`);
  }),
};
