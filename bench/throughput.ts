// Throughput and scale:
// - state requests per second over the socket with 1, 8 and 64 concurrent clients (each client one
//   kept-alive connection sending GET /v1/cgroups/state back to back), against the same load on a
//   bare node:http server that reads the same freezer file (plain-server.ts);
// - 100 cgroups (one sleeping process each) frozen and thawed at once: one API request naming all
//   100 (POST /v1/freeze, /v1/thaw), 100 concurrent API requests, the library's 100 freezes awaited
//   together, and the C probe writing all 100 then waiting;
// - agentd's resident memory idle, after 1000 operations (freeze/thaw requests), and after each of a
//   fixed number of further batches: its steady level and its peak (warm-up and garbage V8 has not
//   collected yet, told apart from a leak).

import { Agent as HttpAgent } from 'node:http';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import { setTimeout as sleep } from 'node:timers/promises';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import { openFreezer, resolveCgroup, type Freezer, type Hierarchy } from '../src/cgroup/index.js';
import { call, callOk, type RunningAgent } from './agent.js';
import type { BenchCgroup, BenchLab } from './lab.js';
import { FreezerProbe, startWorkload, type NativeTools } from './native.js';
import { ratio, summarize, type Summary } from './stats.js';

const PLAIN_SERVER = fileURLToPath(new URL('./plain-server.js', import.meta.url));

export interface StateThroughput {
  readonly clients: number;
  readonly agentd: { readonly requests: number; readonly seconds: number; readonly rps: number; readonly errors: number };
  readonly plainNode: { readonly requests: number; readonly seconds: number; readonly rps: number; readonly errors: number };
  /** agentd rps / plain node rps. */
  readonly ratio: number;
}

/** `clients` loops, each on its own kept-alive connection, for durationMs after a short warm-up. */
async function hammer(
  socket: string,
  path: string,
  clients: number,
  durationMs: number,
): Promise<{ requests: number; seconds: number; rps: number; errors: number }> {
  const agent = new HttpAgent({ keepAlive: true, maxSockets: clients });
  let counting = false;
  let stop = false;
  let requests = 0;
  let errors = 0;
  const loop = async () => {
    while (!stop) {
      try {
        const reply = await call(socket, 'GET', path, undefined, agent);
        if (counting) {
          if (reply.status === 200) requests++;
          else errors++;
        }
      } catch {
        if (counting) errors++;
      }
    }
  };
  const loops = Array.from({ length: clients }, loop);
  await sleep(Math.min(500, durationMs / 4));
  counting = true;
  const started = performance.now();
  await sleep(durationMs);
  counting = false;
  const seconds = (performance.now() - started) / 1000;
  stop = true;
  await Promise.all(loops);
  agent.destroy();
  return { requests, seconds: Math.round(seconds * 1000) / 1000, rps: Math.round(requests / seconds), errors };
}

async function startPlainServer(lab: BenchLab, cgroup: BenchCgroup): Promise<{ socket: string; stop: () => Promise<void> }> {
  const socket = join(lab.tempDir('plain'), 'plain.sock');
  const child = lab.spawn(process.execPath, [PLAIN_SERVER, socket, cgroup.hierarchy, cgroup.dir], { stdio: ['ignore', 'pipe', 'inherit'] });
  const exited = new Promise((resolve) => child.once('exit', resolve));
  const lines = createInterface({ input: child.stdout! });
  await new Promise<void>((resolve, reject) => {
    lines.once('line', (line) => (line === 'ready' ? resolve() : reject(new Error(`plain-server said "${line}"`))));
    child.once('exit', (code) => reject(new Error(`plain-server exited ${code}`)));
  });
  return {
    socket,
    async stop() {
      child.kill('SIGTERM');
      await exited;
    },
  };
}

export async function measureStateThroughput(
  lab: BenchLab,
  tools: NativeTools,
  agent: RunningAgent,
  hierarchy: Hierarchy,
  clientCounts: readonly number[],
  durationMs: number,
): Promise<StateThroughput[]> {
  const cgroup = lab.cgroup(hierarchy, 'state-throughput');
  try {
    await startWorkload(lab, tools, cgroup, 1, 'sleep');
    const plain = await startPlainServer(lab, cgroup);
    try {
      const path = `/v1/cgroups/state?cgroup=${encodeURIComponent(cgroup.dir)}`;
      await callOk(agent.socket, 'GET', path);
      const results: StateThroughput[] = [];
      for (const clients of clientCounts) {
        const agentd = await hammer(agent.socket, path, clients, durationMs);
        const plainNode = await hammer(plain.socket, path, clients, durationMs);
        results.push({ clients, agentd, plainNode, ratio: ratio(agentd.rps, plainNode.rps) });
      }
      return results;
    } finally {
      await plain.stop();
    }
  } finally {
    lab.removeCgroup(cgroup);
  }
}

/** api: one request per cgroup, all sent at once; batch: one request naming every cgroup. */
export type ConcurrentMethod = 'c' | 'library' | 'api' | 'batch';

export interface ConcurrentCase {
  readonly hierarchy: Hierarchy;
  readonly cgroups: number;
  readonly methods: Record<ConcurrentMethod, { readonly freeze: Summary; readonly thaw: Summary }>;
  /** The medians of the other methods against the C probe's. */
  readonly vsC: Record<Exclude<ConcurrentMethod, 'c'>, { readonly freeze: number; readonly thaw: number }>;
}

export async function measureConcurrent(
  lab: BenchLab,
  tools: NativeTools,
  agent: RunningAgent,
  hierarchy: Hierarchy,
  count: number,
  runs: number,
  gapMs: number,
): Promise<ConcurrentCase> {
  const cgroups: BenchCgroup[] = [];
  const freezers: Freezer[] = [];
  let probe: FreezerProbe | undefined;
  try {
    for (let i = 0; i < count; i++) {
      const cgroup = lab.cgroup(hierarchy, `concurrent-${i}`);
      cgroups.push(cgroup);
      await startWorkload(lab, tools, cgroup, 1, 'sleep');
      freezers.push(openFreezer(resolveCgroup(cgroup.dir, { hierarchy })));
    }
    probe = await FreezerProbe.start(
      lab,
      tools,
      hierarchy,
      cgroups.map((c) => c.dir),
    );
    const run: Record<ConcurrentMethod, (op: 'freeze' | 'thaw') => Promise<number>> = {
      c: (op) => probe!.run(op),
      library: async (op) => {
        const started = performance.now();
        await Promise.all(freezers.map((f) => (op === 'freeze' ? f.freeze() : f.thaw())));
        return performance.now() - started;
      },
      api: async (op) => {
        const started = performance.now();
        await Promise.all(cgroups.map((c) => callOk(agent.socket, 'POST', `/v1/cgroups/${op}`, { cgroup: c.dir })));
        return performance.now() - started;
      },
      batch: async (op) => {
        const reply = await callOk(agent.socket, 'POST', `/v1/${op}`, { cgroups: cgroups.map((c) => c.dir) });
        return reply.ms;
      },
    };
    const methods: ConcurrentMethod[] = ['c', 'library', 'api', 'batch'];
    const times: Record<string, number[]> = {};
    for (const m of methods) for (const op of ['freeze', 'thaw']) times[`${m}:${op}`] = [];
    const warmup = 1;
    for (let round = 0; round < warmup + runs; round++) {
      for (const m of [...methods.slice(round % methods.length), ...methods.slice(0, round % methods.length)]) {
        for (const op of ['freeze', 'thaw'] as const) {
          await sleep(gapMs);
          const ms = await run[m](op);
          const want = op === 'freeze' ? 'FROZEN' : 'THAWED';
          const wrong = freezers.filter((f) => f.state() !== want).length;
          if (wrong > 0) throw new Error(`${m} ${op} of ${count} cgroups returned with ${wrong} of them not ${want}`);
          if (round >= warmup) times[`${m}:${op}`].push(ms);
        }
      }
    }
    const methodsResult = Object.fromEntries(
      methods.map((m) => [m, { freeze: summarize(times[`${m}:freeze`]), thaw: summarize(times[`${m}:thaw`]) }]),
    ) as ConcurrentCase['methods'];
    const vs = (m: Exclude<ConcurrentMethod, 'c'>) => ({
      freeze: ratio(methodsResult[m].freeze.median, methodsResult.c.freeze.median),
      thaw: ratio(methodsResult[m].thaw.median, methodsResult.c.thaw.median),
    });
    return {
      hierarchy,
      cgroups: count,
      methods: methodsResult,
      vsC: { library: vs('library'), api: vs('api'), batch: vs('batch') },
    };
  } finally {
    for (const f of freezers) f.close();
    await probe?.stop();
    for (const cgroup of cgroups) lab.removeCgroup(cgroup);
  }
}

export interface MemoryResult {
  readonly idleBytes: number;
  /** Operations per batch (alternating freeze and thaw requests, a new connection each). */
  readonly operations: number;
  /** RSS after each batch: [0] after `operations`, [1] after 2 x `operations`, ... */
  readonly afterBatches: readonly number[];
  readonly afterFirstBytes: number;
  /** The median RSS of the last STEADY_BATCHES batches (of all, when there are fewer). */
  readonly steadyBytes: number;
  /** The highest RSS after any batch. */
  readonly peakBytes: number;
}

const SETTLE_MS = 1000;
// A fixed number of batches, and the steady level read from the last few: RSS climbs with garbage
// promoted to V8's old space until one of V8's own major collections, which came between 12000
// and 16000 requests here; stopping at the first batch that grew little read +9.6 MB in one run
// and +29.6 in the next of the same build (docs/bench.md, "2026-12-03: agentd's memory").
const DEFAULT_BATCHES = 20;
const STEADY_BATCHES = 5;

/** Must be called on a freshly started agent: the first reading is its idle memory. */
export async function measureMemory(
  lab: BenchLab,
  tools: NativeTools,
  agent: RunningAgent,
  hierarchy: Hierarchy,
  operations: number,
  batches = DEFAULT_BATCHES,
): Promise<MemoryResult> {
  await sleep(SETTLE_MS);
  const idleBytes = agent.rss();
  const cgroup = lab.cgroup(hierarchy, 'memory');
  try {
    await startWorkload(lab, tools, cgroup, 1, 'sleep');
    const batch = async () => {
      for (let i = 0; i < operations; i++) {
        await callOk(agent.socket, 'POST', `/v1/cgroups/${i % 2 === 0 ? 'freeze' : 'thaw'}`, { cgroup: cgroup.dir });
      }
      if (operations % 2 === 1) await callOk(agent.socket, 'POST', '/v1/cgroups/thaw', { cgroup: cgroup.dir });
      await sleep(SETTLE_MS);
      return agent.rss();
    };
    const afterBatches: number[] = [];
    while (afterBatches.length < Math.max(1, batches)) afterBatches.push(await batch());
    const last = afterBatches.slice(-STEADY_BATCHES).sort((x, y) => x - y);
    return {
      idleBytes,
      operations,
      afterBatches,
      afterFirstBytes: afterBatches[0],
      steadyBytes: last[Math.floor(last.length / 2)],
      peakBytes: Math.max(...afterBatches),
    };
  } finally {
    lab.removeCgroup(cgroup);
  }
}
