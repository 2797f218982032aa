// The benchmark's fifteen targets (docs/bench.md, Targets), each checked against this run's figures.
// Every target compares agentd with a baseline measured in the same run, except the absolute ones
// (requests per second, memory). A target whose figures were not measured in this run (a section left out) is
// reported with measured null and met null rather than guessed.

import type { CheckpointCase } from './checkpoint.js';
import type { CliStartup } from './cli-startup.js';
import type { LatencyCase, Method } from './latency.js';
import type { ConcurrentCase, MemoryResult, StateThroughput } from './throughput.js';

export interface Target {
  readonly name: string;
  readonly target: string;
  /** The figure compared with the target (the worst case where there are several). */
  readonly measured: number | null;
  readonly unit: string;
  readonly met: boolean | null;
  /** Which case gave the measured (worst) figure, and anything else worth knowing. */
  readonly where?: string;
}

export interface TargetInputs {
  readonly latency: readonly LatencyCase[];
  readonly checkpoint?: readonly CheckpointCase[];
  readonly state?: readonly StateThroughput[];
  readonly concurrent?: readonly ConcurrentCase[];
  readonly memory?: MemoryResult;
  readonly cli?: CliStartup;
}

/** MB as the issue writes it: 10^6 bytes. */
export const MB = 1e6;
/** RSS moves by a little with the garbage collector's rhythm; more than this is growth. */
export const MEMORY_GROWTH_TOLERANCE_MB = 2;
/** Once warm, the agent's RSS may sit this far above its idle figure (and no further). */
export const MEMORY_STEADY_TOLERANCE_MB = 10;

const round = (x: number, digits = 3) => Math.round(x * 10 ** digits) / 10 ** digits;

function caseName(c: LatencyCase): string {
  return `${c.hierarchy} ${c.workload} N=${c.processes}`;
}

/** The case with the largest value of f (undefined values skipped). */
function worst<T>(items: readonly T[], f: (item: T) => number | undefined): { item: T; value: number } | undefined {
  let found: { item: T; value: number } | undefined;
  for (const item of items) {
    const value = f(item);
    if (value === undefined || Number.isNaN(value)) continue;
    if (!found || value > found.value) found = { item, value };
  }
  return found;
}

function latencyTarget(
  name: string,
  target: string,
  unit: string,
  cases: readonly LatencyCase[],
  f: (c: LatencyCase) => number | undefined,
  limit: number,
): Target {
  const w = worst(cases, f);
  if (!w) return { name, target, measured: null, unit, met: null, where: 'not measured in this run' };
  return { name, target, measured: round(w.value), unit, met: w.value <= limit, where: `worst case: ${caseName(w.item)}` };
}

const freezeMedian = (c: LatencyCase, m: Method) => c.methods[m]?.freeze.median;

/** How far method m's freeze median lies above the C baseline's, in a case; undefined if either is missing. */
const excess = (m: Method) => (c: LatencyCase) => {
  const a = freezeMedian(c, m);
  const b = freezeMedian(c, 'c');
  return a === undefined || b === undefined ? undefined : a - b;
};

export function evaluateTargets(inputs: TargetInputs): Target[] {
  const targets: Target[] = [];
  const { latency } = inputs;
  targets.push(
    latencyTarget(
      'freeze-library-median-within-c-plus-1ms',
      'library freeze (openFreezer().freeze()) median <= C baseline median + 1 ms, every N, v1 and v2',
      'ms over C',
      latency,
      excess('library'),
      1,
    ),
  );
  targets.push(
    latencyTarget(
      'freeze-library-median-within-1.5x-c-at-n100',
      'library freeze median <= 1.5 x C baseline median at N >= 100',
      'x C',
      latency.filter((c) => c.processes >= 100),
      (c) => c.methods.library?.vsC?.freezeMedian,
      1.5,
    ),
  );
  targets.push(
    latencyTarget(
      'freeze-api-median-within-c-plus-2ms',
      'API freeze (POST /v1/cgroups/freeze, socket round trip included) median <= C baseline median + 2 ms',
      'ms over C',
      latency,
      excess('api'),
      2,
    ),
  );
  targets.push(
    latencyTarget(
      'freeze-v2-p95-within-fifth-of-polling',
      'v2 API freeze p95 <= 1/5 of the 10 ms polling loop p95',
      'x polling p95',
      latency.filter((c) => c.hierarchy === 'v2'),
      (c) => {
        const a = c.methods.api?.freeze.p95;
        const b = c.methods.poll10?.freeze.p95;
        return a === undefined || b === undefined ? undefined : a / b;
      },
      0.2,
    ),
  );

  targets.push(...checkpointTargets(inputs.checkpoint ?? []));

  const state = inputs.state ?? [];
  const slowest = state.length > 0 ? state.reduce((a, b) => (b.agentd.rps < a.agentd.rps ? b : a)) : undefined;
  targets.push(
    slowest
      ? {
          name: 'state-requests-per-second',
          target: '>= 1000 state requests per second over the socket (1, 8 and 64 clients)',
          measured: slowest.agentd.rps,
          unit: 'requests/s',
          met: slowest.agentd.rps >= 1000,
          where: `lowest with ${slowest.clients} client(s)`,
        }
      : {
          name: 'state-requests-per-second',
          target: '>= 1000 state requests per second over the socket (1, 8 and 64 clients)',
          measured: null,
          unit: 'requests/s',
          met: null,
          where: 'not measured in this run',
        },
  );

  const memory = inputs.memory;
  targets.push(
    memory
      ? {
          name: 'idle-memory',
          target: 'agentd idle resident memory < 80 MB',
          measured: round(memory.idleBytes / MB, 1),
          unit: 'MB',
          met: memory.idleBytes < 80 * MB,
        }
      : {
          name: 'idle-memory',
          target: 'agentd idle resident memory < 80 MB',
          measured: null,
          unit: 'MB',
          met: null,
          where: 'not measured in this run',
        },
  );
  const growthTarget = `no growth after ${memory?.operations ?? 1000} operations: RSS after them <= idle RSS + ${MEMORY_GROWTH_TOLERANCE_MB} MB`;
  const mb = (bytes: number) => round(bytes / MB, 1);
  targets.push(
    memory
      ? {
          name: 'memory-no-growth',
          target: growthTarget,
          measured: mb(memory.afterFirstBytes - memory.idleBytes),
          unit: 'MB',
          met: memory.afterFirstBytes - memory.idleBytes <= MEMORY_GROWTH_TOLERANCE_MB * MB,
          where:
            `idle ${mb(memory.idleBytes)} MB, after ${memory.operations} operations ${mb(memory.afterFirstBytes)} MB, ` +
            `steady ${mb(memory.steadyBytes)} MB, peak ${mb(memory.peakBytes)} MB over ${memory.afterBatches.length * memory.operations} operations`,
        }
      : { name: 'memory-no-growth', target: growthTarget, measured: null, unit: 'MB', met: null, where: 'not measured in this run' },
  );
  targets.push(...requestPathTargets(inputs));
  return targets;
}

const NOT_MEASURED = { measured: null, met: null, where: 'not measured in this run' } as const;

/**
 * The checkpoint's three targets, each against the bare `criu dump` run of the same fixture (spawn
 * to exit, the same --freeze-cgroup and --leave-running): the workload's frozen window of the
 * 256 MiB fixture within 1.10x of it, the 20-process tree's within it + 20 ms, and the whole
 * checkpoint (request to answer: CRIU, checksums, manifest, publish) within 1.25x of it for every
 * fixture. The bench's checkpoints leave the workload THAWED as found, so the window ends at the
 * early thaw (src/checkpoint/dump-flow.ts).
 */
function checkpointTargets(checkpoints: readonly CheckpointCase[]): Target[] {
  const of = (fixture: string) => checkpoints.find((c) => c.fixture === fixture);
  const big = of('memory-256MiB');
  const tree = of('tree-20');
  const whole = worst(checkpoints, (c) => c.ratio);
  const window = (c: CheckpointCase) => `${c.agentd.frozenWindowMs.median} ms frozen against ${c.criu.totalMs.median} ms for bare criu`;
  return [
    single(
      'checkpoint-frozen-window-256mib-within-1.1x-criu-run',
      "frozen window of the 256 MiB workload (agentd's timings.frozenWindowMs) median <= 1.10 x the bare criu dump run's median",
      'x criu run',
      big && big.agentd.frozenWindowMs.median / big.criu.totalMs.median,
      1.1,
      big && window(big),
    ),
    single(
      'checkpoint-frozen-window-tree-within-criu-run-plus-20ms',
      "frozen window of the 20-process tree median <= the bare criu dump run's median + 20 ms",
      'ms over criu run',
      tree && tree.agentd.frozenWindowMs.median - tree.criu.totalMs.median,
      20,
      tree && window(tree),
    ),
    single(
      'checkpoint-within-1.25x-criu-run',
      "whole agentd checkpoint (request to answer) median <= 1.25 x the bare criu dump run's median, every fixture",
      'x criu run',
      whole?.value,
      1.25,
      whole && `worst fixture: ${whole.item.fixture} (${whole.item.agentd.totalMs.median} against ${whole.item.criu.totalMs.median} ms)`,
    ),
  ];
}

/** A target that compares one figure with a limit (lower is better unless `atLeast`). */
function single(
  name: string,
  target: string,
  unit: string,
  value: number | undefined,
  limit: number,
  where?: string,
  atLeast = false,
): Target {
  if (value === undefined || Number.isNaN(value)) return { name, target, unit, ...NOT_MEASURED };
  return { name, target, unit, measured: round(value), met: atLeast ? value >= limit : value <= limit, ...(where ? { where } : {}) };
}

/** The targets of the request path: many cgroups in one request, one task, state throughput, memory, agentctl. */
function requestPathTargets(inputs: TargetInputs): Target[] {
  const out: Target[] = [];
  const batch = worst(inputs.concurrent ?? [], (c) => c.vsC.batch?.freeze);
  out.push(
    single(
      'batch-freeze-within-2x-c',
      'one API request freezing N cgroups at once (POST /v1/freeze) median <= 2 x the C baseline writing all N then waiting',
      'x C',
      batch?.value,
      2,
      batch && `worst: ${batch.item.hierarchy}, ${batch.item.cgroups} cgroups`,
    ),
  );
  out.push(
    latencyTarget(
      'freeze-api-v2-one-task-within-c-plus-1ms',
      'API freeze of a v2 cgroup of 1 task median <= C baseline median + 1 ms',
      'ms over C',
      inputs.latency.filter((c) => c.hierarchy === 'v2' && c.processes === 1),
      excess('api'),
      1,
    ),
  );
  const eight = (inputs.state ?? []).find((s) => s.clients === 8);
  out.push(
    single(
      'state-8-clients-half-of-node-http',
      'state requests per second with 8 clients >= 0.5 x a bare node:http server answering the same state',
      'x node:http',
      eight?.ratio,
      0.5,
      eight && `${eight.agentd.rps} against ${eight.plainNode.rps} requests/s`,
      true,
    ),
  );
  const memory = inputs.memory;
  out.push(
    single(
      'memory-steady-within-idle-plus-10mb',
      `steady RSS (the median after the last 5 of the batches of operations) <= idle RSS + ${MEMORY_STEADY_TOLERANCE_MB} MB`,
      'MB over idle',
      memory && (memory.steadyBytes - memory.idleBytes) / MB,
      MEMORY_STEADY_TOLERANCE_MB,
      memory &&
        `over ${memory.afterBatches.length * memory.operations} operations; peak +${((memory.peakBytes - memory.idleBytes) / MB).toFixed(1)} MB`,
    ),
  );
  const cli = inputs.cli;
  out.push(
    single(
      'agentctl-state-within-1.5x-node',
      'one whole `agentctl state` process median <= 1.5 x `node -e 0` median',
      'x node -e 0',
      cli?.ratio,
      1.5,
      cli && `${round(cli.agentctl.median, 1)} ms against ${round(cli.node.median, 1)} ms`,
    ),
  );
  return out;
}
