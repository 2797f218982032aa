// Freeze and thaw latency: one cgroup holding N processes (sleeping or busy), frozen and thawed
// again and again by every method in turn, so that the load of the moment falls on all of them
// alike (the order rotates each round). Methods:
//   c        the C baseline (freezer-probe): write, then the fastest wait (v2 inotify, v1 re-read)
//   poll10   v2 only: the common runtime strategy, write then re-read cgroup.events every 10 ms
//   library  agentd's driver: openFreezer(ref).freeze() / .thaw(), the freezer kept open
//   control  agentd's guarded call: CgroupControl.freeze / .thaw (lock, record, status)
//   api      agentd over its socket: POST /v1/cgroups/freeze|thaw, a new connection each time
// Each operation starts from a settled state after a pause (gapMs): the kernel delays a
// cgroup.events notification that follows the previous one by less than ~16 ms (docs/freezer.md), so a
// freeze right after a thaw would measure that rate limit rather than the freeze.

import { performance } from 'node:perf_hooks';
import { setTimeout as sleep } from 'node:timers/promises';
import { openFreezer, resolveCgroup, type Freezer, type Hierarchy } from '../src/cgroup/index.js';
import { CgroupControl } from '../src/lock/index.js';
import { callOk } from './agent.js';
import type { BenchLab } from './lab.js';
import { FreezerProbe, startWorkload, type NativeTools, type WorkKind } from './native.js';
import { ratio, summarize, type Summary } from './stats.js';

export type Method = 'c' | 'poll10' | 'library' | 'control' | 'api';
export type Operation = 'freeze' | 'thaw';
export const AGENTD_METHODS: readonly Method[] = ['library', 'control', 'api'];

export interface LatencyOptions {
  readonly hierarchies: readonly Hierarchy[];
  readonly counts: readonly number[];
  readonly workloads: readonly WorkKind[];
  readonly runs: number;
  /** Rounds run first and thrown away (JIT warm-up, caches). */
  readonly warmup: number;
  readonly gapMs: number;
  /** Leave out the API method (no agent). */
  readonly socket?: string;
}

export interface MethodResult {
  readonly freeze: Summary;
  readonly thaw: Summary;
  /** median and p95 against the C baseline's, for freeze and thaw (not set for c itself). */
  readonly vsC?: { freezeMedian: number; freezeP95: number; thawMedian: number; thawP95: number };
}

export interface LatencyCase {
  readonly hierarchy: Hierarchy;
  readonly processes: number;
  readonly workload: WorkKind;
  readonly methods: Partial<Record<Method, MethodResult>>;
}

interface Driver {
  readonly method: Method;
  run(op: Operation): Promise<number>;
}

function methodsFor(hierarchy: Hierarchy, options: LatencyOptions): Method[] {
  const methods: Method[] = ['c'];
  if (hierarchy === 'v2') methods.push('poll10');
  methods.push('library', 'control');
  if (options.socket) methods.push('api');
  return methods;
}

async function timed(fn: () => Promise<unknown>): Promise<number> {
  const started = performance.now();
  await fn();
  return performance.now() - started;
}

function drivers(
  methods: readonly Method[],
  ctx: { probe: FreezerProbe; freezer: Freezer; control: CgroupControl; dir: string; socket?: string },
): Driver[] {
  const ref = ctx.freezer.cgroup;
  return methods.map((method): Driver => {
    switch (method) {
      case 'c':
        return { method, run: (op) => ctx.probe.run(op) };
      case 'poll10':
        return { method, run: (op) => ctx.probe.run(op === 'freeze' ? 'freeze-poll10' : 'thaw-poll10') };
      case 'library':
        return { method, run: (op) => timed(() => (op === 'freeze' ? ctx.freezer.freeze() : ctx.freezer.thaw())) };
      case 'control':
        return { method, run: (op) => timed(() => (op === 'freeze' ? ctx.control.freeze(ref) : ctx.control.thaw(ref))) };
      case 'api':
        return {
          method,
          async run(op) {
            const reply = await callOk(ctx.socket!, 'POST', `/v1/cgroups/${op}`, { cgroup: ctx.dir });
            const want = op === 'freeze' ? 'FROZEN' : 'THAWED';
            if (reply.body?.state !== want) throw new Error(`api ${op} answered state ${reply.body?.state}, expected ${want}`);
            return reply.ms;
          },
        };
    }
  });
}

function rotate<T>(items: readonly T[], by: number): T[] {
  const k = by % items.length;
  return [...items.slice(k), ...items.slice(0, k)];
}

export async function measureCase(
  lab: BenchLab,
  tools: NativeTools,
  options: LatencyOptions,
  hierarchy: Hierarchy,
  processes: number,
  workload: WorkKind,
  runDir: string,
): Promise<LatencyCase> {
  const cgroup = lab.cgroup(hierarchy, `${hierarchy}-${workload}-${processes}`);
  let probe: FreezerProbe | undefined;
  let freezer: Freezer | undefined;
  try {
    await startWorkload(lab, tools, cgroup, processes, workload);
    probe = await FreezerProbe.start(lab, tools, hierarchy, [cgroup.dir]);
    const ref = resolveCgroup(cgroup.dir, { hierarchy });
    freezer = openFreezer(ref);
    const control = new CgroupControl({ runDir });
    const methods = methodsFor(hierarchy, options);
    const all = drivers(methods, { probe, freezer, control, dir: cgroup.dir, socket: options.socket });
    const times: Record<string, number[]> = {};
    for (const d of all) times[`${d.method}:freeze`] = [];
    for (const d of all) times[`${d.method}:thaw`] = [];
    for (let round = 0; round < options.warmup + options.runs; round++) {
      for (const d of rotate(all, round)) {
        for (const op of ['freeze', 'thaw'] as const) {
          await sleep(options.gapMs);
          const ms = await d.run(op);
          const state = freezer.state();
          const want = op === 'freeze' ? 'FROZEN' : 'THAWED';
          if (state !== want) throw new Error(`${d.method} ${op} of ${cgroup.dir} returned with the cgroup ${state}, not ${want}`);
          if (round >= options.warmup) times[`${d.method}:${op}`].push(ms);
        }
      }
    }
    const results: Partial<Record<Method, MethodResult>> = {};
    const c = { freeze: summarize(times['c:freeze']), thaw: summarize(times['c:thaw']) };
    for (const method of methods) {
      const freeze = summarize(times[`${method}:freeze`]);
      const thaw = summarize(times[`${method}:thaw`]);
      results[method] =
        method === 'c'
          ? { freeze, thaw }
          : {
              freeze,
              thaw,
              vsC: {
                freezeMedian: ratio(freeze.median, c.freeze.median),
                freezeP95: ratio(freeze.p95, c.freeze.p95),
                thawMedian: ratio(thaw.median, c.thaw.median),
                thawP95: ratio(thaw.p95, c.thaw.p95),
              },
            };
    }
    return { hierarchy, processes, workload, methods: results };
  } finally {
    freezer?.close();
    await probe?.stop();
    lab.removeCgroup(cgroup);
  }
}

export async function measureLatency(
  lab: BenchLab,
  tools: NativeTools,
  options: LatencyOptions,
  runDir: string,
  onCase: (c: LatencyCase) => void = () => undefined,
): Promise<LatencyCase[]> {
  const cases: LatencyCase[] = [];
  for (const hierarchy of options.hierarchies) {
    for (const workload of options.workloads) {
      for (const processes of options.counts) {
        const result = await measureCase(lab, tools, options, hierarchy, processes, workload, runDir);
        cases.push(result);
        onCase(result);
      }
    }
  }
  return cases;
}
