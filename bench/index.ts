// runBench: the whole benchmark (or a part of it, for the test), as data. run.ts prints it and
// writes bench/results.json; test/bench/bench.test.ts runs a tiny configuration of it.

import { mkdirSync } from 'node:fs';
import { loadavg, cpus, release } from 'node:os';
import { join } from 'node:path';
import type { Hierarchy } from '../src/cgroup/index.js';
import { startAgent, type RunningAgent } from './agent.js';
import { measureCliStartup, type CliStartup } from './cli-startup.js';
import { CHECKPOINT_FIXTURES, measureCheckpoints, type CheckpointCase, type CheckpointFixture } from './checkpoint.js';
import { BenchLab, hierarchyRoot, sweepStale } from './lab.js';
import { measureLatency, type LatencyCase } from './latency.js';
import { buildNative, type WorkKind } from './native.js';
import { evaluateTargets, type Target } from './targets.js';
import {
  measureConcurrent,
  measureMemory,
  measureStateThroughput,
  type ConcurrentCase,
  type MemoryResult,
  type StateThroughput,
} from './throughput.js';

export interface BenchOptions {
  readonly hierarchies: readonly Hierarchy[];
  readonly counts: readonly number[];
  readonly workloads: readonly WorkKind[];
  readonly runs: number;
  readonly warmup: number;
  /** Pause before each measured operation (see latency.ts). */
  readonly gapMs: number;
  /** Measure through a bench-started agentd (API methods, throughput, memory, checkpoints). */
  readonly api: boolean;
  readonly checkpoint: boolean;
  readonly checkpointFixtures: readonly CheckpointFixture[];
  readonly checkpointRuns: number;
  readonly checkpointHierarchy: Hierarchy;
  readonly throughput: boolean;
  readonly clients: readonly number[];
  readonly throughputMs: number;
  readonly concurrentCgroups: number;
  readonly concurrentRuns: number;
  readonly memoryOperations: number;
  /** Batches of memoryOperations; the steady level is read from the last five. */
  readonly memoryBatches: number;
  /** Whole `agentctl state` processes (and as many `node -e 0`) timed, in the throughput part. */
  readonly cliRuns: number;
  /** Progress lines (to stderr in run.ts). */
  readonly log: (line: string) => void;
}

export function availableHierarchies(): Hierarchy[] {
  return (['v1', 'v2'] as const).filter((h) => hierarchyRoot(h) !== undefined);
}

export const DEFAULT_OPTIONS: BenchOptions = {
  hierarchies: availableHierarchies(),
  counts: [1, 10, 100, 1000],
  workloads: ['sleep', 'busy'],
  runs: 30,
  warmup: 2,
  gapMs: 30,
  api: true,
  checkpoint: true,
  checkpointFixtures: CHECKPOINT_FIXTURES,
  checkpointRuns: 5,
  checkpointHierarchy: availableHierarchies().includes('v2') ? 'v2' : 'v1',
  throughput: true,
  clients: [1, 8, 64],
  throughputMs: 3000,
  concurrentCgroups: 100,
  concurrentRuns: 10,
  memoryOperations: 1000,
  memoryBatches: 20,
  cliRuns: 20,
  log: () => undefined,
};

export interface BenchResults {
  readonly formatVersion: 1;
  readonly startedAt: string;
  readonly finishedAt: string;
  readonly durationS: number;
  readonly host: {
    readonly kernel: string;
    readonly cpus: number;
    readonly node: string;
    readonly compiler: string;
    readonly criu?: { path: string; version: string };
    readonly loadAverage: { readonly start: number[]; readonly end: number[] };
  };
  readonly options: Omit<BenchOptions, 'log'>;
  readonly latency: LatencyCase[];
  readonly checkpoint?: { readonly tmpfs: string; readonly cases: CheckpointCase[] };
  readonly throughput?: { readonly state: StateThroughput[]; readonly concurrent: ConcurrentCase[] };
  readonly memory?: MemoryResult;
  readonly cli?: CliStartup;
  readonly targets: Target[];
  /** What the cleanup could not remove (should always be empty). */
  readonly leftovers: string[];
}

const TMPFS_SIZE = '3g';

export async function runBench(partial: Partial<BenchOptions> = {}): Promise<BenchResults> {
  const options: BenchOptions = { ...DEFAULT_OPTIONS, ...partial };
  const log = options.log;
  const started = new Date();
  const loadStart = loadavg().map((x) => Math.round(x * 100) / 100);
  for (const item of sweepStale()) log(`removed what an earlier killed run left: ${item}`);
  const lab = new BenchLab();
  let agent: RunningAgent | undefined;
  try {
    log('building the C programs (gcc)');
    const tools = buildNative(lab);
    const runDir = join(lab.tempDir('run'), 'run');

    let tmpfs: string | undefined;
    if (options.checkpoint) {
      if (!options.api) throw new Error('the checkpoint section needs the agent (api)');
      tmpfs = lab.tmpfs('images', TMPFS_SIZE);
    }
    let memory: MemoryResult | undefined;
    if (options.api) {
      log('starting agentd');
      agent = await startAgent(lab, tmpfs ? { imagesDir: join(tmpfs, 'agentd') } : {});
      if (options.throughput) {
        log(`agentd memory: idle, then ${options.memoryBatches} batches of ${options.memoryOperations} operations`);
        memory = await measureMemory(lab, tools, agent, options.hierarchies[0], options.memoryOperations, options.memoryBatches);
      }
    }

    const latency = await measureLatency(lab, tools, { ...options, socket: agent?.socket }, runDir, (c) =>
      log(`latency ${c.hierarchy} ${c.workload} N=${c.processes}: done`),
    );

    let throughput: BenchResults['throughput'];
    let cli: CliStartup | undefined;
    if (options.throughput && agent) {
      log(`state requests per second (${options.clients.join(', ')} clients)`);
      const state = await measureStateThroughput(
        lab,
        tools,
        agent,
        options.hierarchies[options.hierarchies.length - 1],
        options.clients,
        options.throughputMs,
      );
      const concurrent: ConcurrentCase[] = [];
      for (const hierarchy of options.hierarchies) {
        log(`${options.concurrentCgroups} cgroups at once, ${hierarchy}`);
        concurrent.push(
          await measureConcurrent(lab, tools, agent, hierarchy, options.concurrentCgroups, options.concurrentRuns, options.gapMs),
        );
      }
      throughput = { state, concurrent };
      log(`agentctl start-up: ${options.cliRuns} runs of agentctl state and of node -e 0`);
      cli = await measureCliStartup(lab, tools, agent, options.hierarchies[0], options.cliRuns);
    }

    let checkpoint: BenchResults['checkpoint'];
    let criu: { path: string; version: string } | undefined;
    if (options.checkpoint && agent && tmpfs) {
      const criuImagesDir = join(tmpfs, 'criu');
      mkdirSync(criuImagesDir);
      const measured = await measureCheckpoints(
        lab,
        {
          fixtures: options.checkpointFixtures,
          runs: options.checkpointRuns,
          hierarchy: options.checkpointHierarchy,
          socket: agent.socket,
          agentImagesDir: agent.imagesDir,
          criuImagesDir,
        },
        (c) => log(`checkpoint ${c.fixture}: done`),
      );
      criu = measured.criu;
      checkpoint = { tmpfs: `tmpfs size=${TMPFS_SIZE}`, cases: measured.cases };
    }

    await agent?.stop();
    agent = undefined;
    if (tmpfs) lab.unmount(tmpfs);
    const leftovers = lab.dispose();
    const finished = new Date();
    const { log: _log, ...recorded } = options;
    void _log;
    return {
      formatVersion: 1,
      startedAt: started.toISOString(),
      finishedAt: finished.toISOString(),
      durationS: Math.round((finished.getTime() - started.getTime()) / 100) / 10,
      host: {
        kernel: release(),
        cpus: cpus().length,
        node: process.version,
        compiler: tools.compiler,
        ...(criu ? { criu } : {}),
        loadAverage: { start: loadStart, end: loadavg().map((x) => Math.round(x * 100) / 100) },
      },
      options: recorded,
      latency,
      ...(checkpoint ? { checkpoint } : {}),
      ...(throughput ? { throughput } : {}),
      ...(memory ? { memory } : {}),
      ...(cli ? { cli } : {}),
      targets: evaluateTargets({
        latency,
        checkpoint: checkpoint?.cases,
        state: throughput?.state,
        concurrent: throughput?.concurrent,
        memory,
        cli,
      }),
      leftovers,
    };
  } finally {
    await agent?.stop().catch(() => undefined);
    lab.dispose();
  }
}
