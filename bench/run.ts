// `npm run bench`: runs the benchmark, prints the table, writes bench/results.json.
//
//   node dist/bench/run.js [--quick] [--runs N] [--counts 1,10,100,1000] [--hierarchies v1,v2]
//                          [--workloads sleep,busy] [--checkpoint-runs N] [--no-checkpoint]
//                          [--no-throughput] [--checkpoint-only] [--checkpoint-fixtures a,b] [--out FILE]
//
// Must run as root (it creates cgroups, mounts a tmpfs and runs CRIU). Ctrl-C cleans up.

import { writeFileSync } from 'node:fs';
import { loadavg } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import type { Hierarchy } from '../src/cgroup/index.js';
import { CHECKPOINT_FIXTURES, type CheckpointFixture } from './checkpoint.js';
import { DEFAULT_OPTIONS, runBench, type BenchOptions } from './index.js';
import { REPO_ROOT, type WorkKind } from './native.js';
import { formatReport } from './report.js';

const QUIET_LOAD = 3;

function list<T extends string>(value: string | undefined, allowed: readonly T[], what: string): T[] | undefined {
  if (value === undefined) return undefined;
  const items = value.split(',').filter(Boolean);
  for (const item of items) if (!allowed.includes(item as T)) throw new Error(`--${what}: "${item}" is not one of ${allowed.join(', ')}`);
  return items as T[];
}

function positive(value: string | undefined, what: string): number | undefined {
  if (value === undefined) return undefined;
  const n = Number(value);
  if (!Number.isInteger(n) || n < 1) throw new Error(`--${what} takes a positive integer, got "${value}"`);
  return n;
}

function parse(argv: string[]): { options: Partial<BenchOptions>; out: string } {
  const { values } = parseArgs({
    args: argv,
    options: {
      quick: { type: 'boolean' },
      runs: { type: 'string' },
      counts: { type: 'string' },
      hierarchies: { type: 'string' },
      workloads: { type: 'string' },
      'checkpoint-runs': { type: 'string' },
      'no-checkpoint': { type: 'boolean' },
      'no-throughput': { type: 'boolean' },
      'checkpoint-only': { type: 'boolean' },
      'checkpoint-fixtures': { type: 'string' },
      out: { type: 'string' },
      help: { type: 'boolean', short: 'h' },
    },
  });
  if (values.help) {
    process.stdout.write(
      'usage: npm run bench -- [--quick] [--runs N] [--counts 1,10,100,1000] [--hierarchies v1,v2] [--workloads sleep,busy]\n' +
        '                        [--checkpoint-runs N] [--no-checkpoint] [--no-throughput] [--checkpoint-only]\n' +
        '                        [--checkpoint-fixtures memory-64MiB,memory-256MiB,tree-20] [--out FILE]\n' +
        'See docs/bench.md.\n',
    );
    process.exit(0);
  }
  const options: Record<string, unknown> = {};
  if (values.quick) {
    Object.assign(options, {
      counts: [1, 100],
      runs: 5,
      warmup: 1,
      checkpointRuns: 2,
      checkpointFixtures: ['memory-64MiB', 'tree-20'] satisfies CheckpointFixture[],
      throughputMs: 1000,
      concurrentRuns: 3,
      memoryOperations: 200,
      memoryBatches: 3,
      cliRuns: 6,
    });
  }
  const set = (key: keyof BenchOptions, value: unknown) => {
    if (value !== undefined) options[key] = value;
  };
  set('runs', positive(values.runs, 'runs'));
  set('checkpointRuns', positive(values['checkpoint-runs'], 'checkpoint-runs'));
  set(
    'counts',
    values.counts?.split(',').map((c) => positive(c, 'counts')),
  );
  set('hierarchies', list<Hierarchy>(values.hierarchies, DEFAULT_OPTIONS.hierarchies, 'hierarchies'));
  set('workloads', list<WorkKind>(values.workloads, ['sleep', 'busy'], 'workloads'));
  if (values['no-checkpoint']) options.checkpoint = false;
  if (values['no-throughput']) options.throughput = false;
  set('checkpointFixtures', list<CheckpointFixture>(values['checkpoint-fixtures'], CHECKPOINT_FIXTURES, 'checkpoint-fixtures'));
  // Only the checkpoint cases: no latency matrix, no throughput (the cores may be shared).
  if (values['checkpoint-only']) Object.assign(options, { counts: [], throughput: false, checkpoint: true });
  return { options: options as Partial<BenchOptions>, out: values.out ?? join(REPO_ROOT, 'bench', 'results.json') };
}

async function main(): Promise<void> {
  if (process.getuid?.() !== 0) {
    process.stderr.write('npm run bench: must run as root (it creates cgroups, mounts a tmpfs and runs CRIU)\n');
    process.exit(2);
  }
  const { options, out } = parse(process.argv.slice(2));
  const load = loadavg()[0];
  if (load > QUIET_LOAD) {
    process.stderr.write(
      `bench: warning: load average ${load.toFixed(2)} (> ${QUIET_LOAD}): figures will be noisy; rerun on a quieter machine for the record\n`,
    );
  }
  const started = Date.now();
  const results = await runBench({
    ...options,
    log: (line) => process.stderr.write(`bench [${((Date.now() - started) / 1000).toFixed(0).padStart(4)} s] ${line}\n`),
  });
  writeFileSync(out, JSON.stringify(results, null, 2) + '\n');
  process.stdout.write(formatReport(results) + '\n');
  process.stdout.write(`\nraw figures: ${out}\n`);
  if (results.leftovers.length > 0) process.exitCode = 1;
}

main().catch((err: unknown) => {
  process.stderr.write(`bench failed: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`);
  process.exitCode = 1;
});
