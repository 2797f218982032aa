// Checkpoint: agentd's POST /v1/checkpoints (what `agentctl checkpoint` sends) against a bare
//   criu dump -t PID -D DIR --freeze-cgroup CG --leave-running
// of the same running fixture, alternating which goes first, images on a tmpfs, deleted after each
// run. Both leave the workload running. Reported: wall time of each (agentd's from the client, the
// request's whole round trip; CRIU's from spawn to exit), their ratio, and how long the workload
// was stopped: agentd's timings.frozenWindowMs against CRIU's own frozen_time from stats-dump.

import { spawn } from 'node:child_process';
import { existsSync, mkdirSync, readFileSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import { setTimeout as sleep } from 'node:timers/promises';
import type { Hierarchy } from '../src/cgroup/index.js';
import { findCriu, readDumpStats } from '../src/criu/index.js';
import { callOk } from './agent.js';
import { pidsOf, type BenchCgroup, type BenchLab } from './lab.js';
import { REPO_ROOT } from './native.js';
import { ratio, summarize, type Summary } from './stats.js';

export type CheckpointFixture = 'memory-64MiB' | 'memory-256MiB' | 'tree-20';
export const CHECKPOINT_FIXTURES: readonly CheckpointFixture[] = ['memory-64MiB', 'memory-256MiB', 'tree-20'];

const WORKLOADS = join(REPO_ROOT, 'fixtures', 'workloads');
const CGEXEC = join(REPO_ROOT, 'fixtures', 'bin', 'cgexec');

export interface CheckpointOptions {
  readonly fixtures: readonly CheckpointFixture[];
  readonly runs: number;
  readonly hierarchy: Hierarchy;
  readonly socket: string;
  /** The agent's images directory, on the tmpfs. */
  readonly agentImagesDir: string;
  /** Where the bare CRIU dumps go, on the same tmpfs. */
  readonly criuImagesDir: string;
}

export interface CheckpointCase {
  readonly fixture: CheckpointFixture;
  readonly hierarchy: Hierarchy;
  readonly processes: number;
  /** Bytes of image per dump (agentd's, as reported). */
  readonly imageBytes: number;
  readonly agentd: {
    readonly totalMs: Summary;
    readonly frozenWindowMs: Summary;
    /** CRIU's frozen_time in agentd's own dump (summed over trees). */
    readonly criuFrozenMs: Summary;
    /** timings.dumpMs: from frozen to the last CRIU dump's end. */
    readonly dumpMs: Summary;
    /**
     * frozenWindowMs - dumpMs: what the workload waits for after CRIU. With the bench's default
     * policy (prior, from THAWED) that is the verdict and the thaw; checksums and publishing come
     * after the thaw (src/checkpoint/dump-flow.ts).
     */
    readonly afterDumpMs: Summary;
    /** timings.hashMs: the checksums left when CRIU is done (after the thaw), in pieces on every hashing thread. */
    readonly hashMs: Summary;
    /** timings.hashedDuringDumpBytes: image bytes already hashed when CRIU exited (page files followed as they grew). */
    readonly hashedDuringDumpBytes: Summary;
    /** timings.publishMs: manifest written, fsynced, renamed. */
    readonly publishMs: Summary;
    /** Image bytes hashed after CRIU (image bytes - median hashedDuringDumpBytes) / median hashMs, in MB/s (10^6 bytes). */
    readonly hashMBps: number;
  };
  readonly criu: { readonly totalMs: Summary; readonly frozenMs: Summary; readonly freezingMs: Summary };
  /** agentd total / CRIU total, medians. */
  readonly ratio: number;
  /** agentd frozen window minus CRIU's frozen_time (bare run), medians, in ms. */
  readonly frozenExcessMs: number;
}

async function waitFor(what: string, timeoutMs: number, check: () => boolean): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!check()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await sleep(20);
  }
}

/** Starts the fixture in the cgroup (as a session leader, as CRIU wants); resolves with its root pid. */
async function startFixture(lab: BenchLab, fixture: CheckpointFixture, cgroup: BenchCgroup): Promise<{ pid: number; processes: number }> {
  const work = lab.tempDir('fixture');
  const procs = join(cgroup.dir, 'cgroup.procs');
  if (fixture === 'tree-20') {
    const child = lab.spawn(CGEXEC, [procs, 'perl', join(WORKLOADS, 'counter-tree.pl'), work, '19'], { detached: true });
    await waitFor('the 20-process tree', 30_000, () => pidsOf(cgroup.dir).length === 20 && existsSync(join(work, 'child-19')));
    return { pid: child.pid!, processes: 20 };
  }
  const mib = fixture === 'memory-64MiB' ? 64 : 256;
  const result = join(work, 'result');
  const child = lab.spawn(CGEXEC, [procs, 'perl', join(WORKLOADS, 'memory-pattern.pl'), String(mib), result], { detached: true });
  await waitFor(`${mib} MiB to be touched`, 120_000, () => existsSync(result) && readFileSync(result, 'utf8').startsWith('ready'));
  return { pid: child.pid!, processes: 1 };
}

function runBareCriu(criu: string, pid: number, dir: string, cgroupDir: string): Promise<number> {
  const args = ['dump', '-t', String(pid), '-D', dir, '--freeze-cgroup', cgroupDir, '--leave-running'];
  return new Promise((resolve, reject) => {
    const started = performance.now();
    // CRIU_FAULT=130: hardware breakpoints never fire on this hypervisor (see src/criu/run.ts).
    const child = spawn(criu, args, { stdio: ['ignore', 'ignore', 'pipe'], env: { ...process.env, CRIU_FAULT: '130' } });
    let stderr = '';
    child.stderr!.on('data', (d: Buffer) => (stderr += d.toString()));
    child.on('error', reject);
    child.on('close', (code) => {
      const ms = performance.now() - started;
      if (code === 0) resolve(ms);
      else
        reject(
          new Error(
            `criu ${args.join(' ')} exited ${code}:\n${stderr
              .split('\n')
              .filter((l) => /Error/.test(l))
              .slice(-5)
              .join('\n')}`,
          ),
        );
    });
  });
}

function assertRunning(cgroup: BenchCgroup, processes: number, after: string): void {
  const pids = pidsOf(cgroup.dir);
  if (pids.length !== processes) throw new Error(`after ${after}: the cgroup holds ${pids.length} processes, not ${processes}`);
  const file = cgroup.hierarchy === 'v1' ? 'freezer.state' : 'cgroup.events';
  const text = readFileSync(join(cgroup.dir, file), 'utf8');
  const thawed = cgroup.hierarchy === 'v1' ? text.trim() === 'THAWED' : /^frozen 0$/m.test(text);
  if (!thawed) throw new Error(`after ${after}: the cgroup is not running (${file}: ${text.trim()})`);
}

export async function measureCheckpointCase(
  lab: BenchLab,
  options: CheckpointOptions,
  fixture: CheckpointFixture,
  criuPath: string,
): Promise<CheckpointCase> {
  const cgroup = lab.cgroup(options.hierarchy, `checkpoint-${fixture}`);
  try {
    const { pid, processes } = await startFixture(lab, fixture, cgroup);
    const agentd = {
      total: [] as number[],
      window: [] as number[],
      criuFrozen: [] as number[],
      dump: [] as number[],
      afterDump: [] as number[],
      hash: [] as number[],
      hashedDuring: [] as number[],
      publish: [] as number[],
    };
    const bare = { total: [] as number[], frozen: [] as number[], freezing: [] as number[] };
    let imageBytes = 0;
    for (let run = 0; run < options.runs; run++) {
      const order = run % 2 === 0 ? ['agentd', 'criu'] : ['criu', 'agentd'];
      for (const who of order) {
        await sleep(200);
        if (who === 'agentd') {
          const reply = await callOk(options.socket, 'POST', '/v1/checkpoints', { cgroup: cgroup.dir }, undefined, 201);
          const summary = reply.body;
          const manifest = (await callOk(options.socket, 'GET', `/v1/checkpoints/${summary.id}`)).body;
          agentd.total.push(reply.ms);
          agentd.window.push(summary.timings.frozenWindowMs);
          agentd.dump.push(summary.timings.dumpMs);
          agentd.afterDump.push(summary.timings.frozenWindowMs - summary.timings.dumpMs);
          agentd.hash.push(summary.timings.hashMs);
          agentd.hashedDuring.push(summary.timings.hashedDuringDumpBytes ?? 0);
          agentd.publish.push(summary.timings.publishMs);
          agentd.criuFrozen.push(manifest.criuStats.reduce((sum: number, s: { frozenTime: number }) => sum + s.frozenTime, 0) / 1000);
          imageBytes = summary.bytes;
          await callOk(options.socket, 'DELETE', `/v1/checkpoints/${summary.id}`);
          assertRunning(cgroup, processes, `agentd's checkpoint of ${fixture}`);
        } else {
          const dir = join(options.criuImagesDir, `run-${run}`);
          mkdirSync(dir);
          try {
            bare.total.push(await runBareCriu(criuPath, pid, dir, cgroup.dir));
            const stats = await readDumpStats(dir);
            bare.frozen.push(stats.frozenTime / 1000);
            bare.freezing.push(stats.freezingTime / 1000);
          } finally {
            rmSync(dir, { recursive: true, force: true });
          }
          assertRunning(cgroup, processes, `bare criu dump of ${fixture}`);
        }
      }
    }
    const result = {
      agentd: {
        totalMs: summarize(agentd.total),
        frozenWindowMs: summarize(agentd.window),
        criuFrozenMs: summarize(agentd.criuFrozen),
        dumpMs: summarize(agentd.dump),
        afterDumpMs: summarize(agentd.afterDump),
        hashMs: summarize(agentd.hash),
        hashedDuringDumpBytes: summarize(agentd.hashedDuring),
        publishMs: summarize(agentd.publish),
        hashMBps: 0,
      },
      criu: { totalMs: summarize(bare.total), frozenMs: summarize(bare.frozen), freezingMs: summarize(bare.freezing) },
    };
    const hashMedian = result.agentd.hashMs.median;
    return {
      fixture,
      hierarchy: options.hierarchy,
      processes,
      imageBytes,
      ...result,
      agentd: {
        ...result.agentd,
        hashMBps: hashMedian > 0 ? Math.round((imageBytes - result.agentd.hashedDuringDumpBytes.median) / hashMedian / 1000) : 0,
      },
      ratio: ratio(result.agentd.totalMs.median, result.criu.totalMs.median),
      frozenExcessMs: Math.round((result.agentd.frozenWindowMs.median - result.criu.frozenMs.median) * 10) / 10,
    };
  } finally {
    lab.removeCgroup(cgroup);
  }
}

export async function measureCheckpoints(
  lab: BenchLab,
  options: CheckpointOptions,
  onCase: (c: CheckpointCase) => void = () => undefined,
): Promise<{ criu: { path: string; version: string }; cases: CheckpointCase[] }> {
  const criu = await findCriu();
  if (!criu.check.ok) throw new Error(`${criu.path} fails \`criu check\`: ${criu.check.output}`);
  const cases: CheckpointCase[] = [];
  for (const fixture of options.fixtures) {
    const result = await measureCheckpointCase(lab, options, fixture, criu.path);
    cases.push(result);
    onCase(result);
  }
  return { criu: { path: criu.path, version: criu.version }, cases };
}
