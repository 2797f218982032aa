// What the fault suite judges with, read straight from the kernel, flock(1) and the image files so
// that agentd's own opinion never grades itself: freezer states, the lock, the image directory,
// CRIU processes left behind, workloads and their processes. Also the seeded PRNG and the figures.

import { spawnSync } from 'node:child_process';
import { existsSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import type { Hierarchy } from '../../src/cgroup/index.js';
import { CgroupControl } from '../../src/lock/index.js';
import { readArgs } from '../../src/proc/index.js';
import { pidAlive, processState, waitUntil, workload, type Lab, type TestCgroup } from '../helpers/lab.js';
import { sleep } from './agent.js';
import type { Json } from '../helpers/json.js';
import { manifestDigest } from '../helpers/digest.js';

export type KernelState = 'THAWED' | 'FREEZING' | 'FROZEN' | 'THAWING';

/** The kernel's word. v2 has no FREEZING of its own: cgroup.freeze 1 with frozen 0 is what it means. */
export function kernelState(cgroup: Pick<TestCgroup, 'hierarchy' | 'dir'>): KernelState {
  if (cgroup.hierarchy === 'v1') return readFileSync(join(cgroup.dir, 'freezer.state'), 'utf8').trim() as KernelState;
  const frozen = /^frozen 1$/m.test(readFileSync(join(cgroup.dir, 'cgroup.events'), 'utf8'));
  const asked = readFileSync(join(cgroup.dir, 'cgroup.freeze'), 'utf8').trim() === '1';
  if (asked) return frozen ? 'FROZEN' : 'FREEZING';
  return frozen ? 'THAWING' : 'THAWED';
}

/**
 * The state once transients are over: a v1 freeze reads FREEZING until a read finds every task
 * frozen (up to 0.33 s measured here, docs/freezer.md), a v2 one until `frozen 1`. A cgroup still in a
 * transient state after `settleMs` is reported as it is: that is a cgroup left half-frozen.
 */
export async function settledState(cgroup: Pick<TestCgroup, 'hierarchy' | 'dir'>, settleMs = 3000): Promise<KernelState> {
  const deadline = Date.now() + settleMs;
  for (;;) {
    const state = kernelState(cgroup);
    if ((state !== 'FREEZING' && state !== 'THAWING') || Date.now() > deadline) return state;
    await sleep(5);
  }
}

export function writeKernel(cgroup: Pick<TestCgroup, 'hierarchy' | 'dir'>, want: 'FROZEN' | 'THAWED'): void {
  if (cgroup.hierarchy === 'v1') writeFileSync(join(cgroup.dir, 'freezer.state'), want);
  else writeFileSync(join(cgroup.dir, 'cgroup.freeze'), want === 'FROZEN' ? '1' : '0');
}

/** Freezes or thaws behind agentd's back and waits for the kernel to confirm. */
export async function setKernel(cgroup: Pick<TestCgroup, 'hierarchy' | 'dir'>, want: 'FROZEN' | 'THAWED'): Promise<void> {
  writeKernel(cgroup, want);
  const deadline = Date.now() + 5000;
  while (kernelState(cgroup) !== want) {
    if (Date.now() > deadline) throw new Error(`${cgroup.dir} did not become ${want}`);
    if (cgroup.hierarchy === 'v1') writeKernel(cgroup, want);
    await sleep(2);
  }
}

/** The lock file agentd uses for this cgroup under runDir. */
export function lockFileOf(runDir: string, cgroup: Pick<TestCgroup, 'hierarchy' | 'path'>): string {
  return new CgroupControl({ runDir }).lockPath({ hierarchy: cgroup.hierarchy, path: cgroup.path });
}

/** `flock -n LOCKFILE true`, the test any cooperating tool would run: true when the lock is free. */
export function flockFree(lockFile: string): boolean {
  if (!existsSync(lockFile)) return true; // flock(1) would create it; no file, no holder
  const result = spawnSync('flock', ['-n', lockFile, 'true'], { encoding: 'utf8' });
  if (result.status !== 0 && result.status !== 1) throw new Error(`flock -n ${lockFile} failed: ${result.stderr}`);
  return result.status === 0;
}

/** The diagnostic record in a lock file (phase, priorState...), or undefined. */
export function lockRecord(lockFile: string): Record<string, Json> | undefined {
  try {
    return JSON.parse(readFileSync(lockFile, 'utf8').split('\n', 1)[0]);
  } catch {
    return undefined;
  }
}

export interface ImageAudit {
  /** Complete images whose manifest and every checksum verify. */
  good: string[];
  partial: string[];
  failed: string[];
  /** Anything else: an image that looks good (a plain name) but does not verify, stray files. */
  bad: string[];
}

/** Every entry of an image directory: good and verified, or plainly not good (partial/failed). */
export function auditImages(imagesDir: string): ImageAudit {
  const audit: ImageAudit = { good: [], partial: [], failed: [], bad: [] };
  if (!existsSync(imagesDir)) return audit;
  for (const name of readdirSync(imagesDir)) {
    const dir = join(imagesDir, name);
    if (name.startsWith('.partial-')) audit.partial.push(name);
    else if (name.endsWith('.failed')) audit.failed.push(name);
    else {
      const problem = verifyImage(dir, name);
      if (problem) audit.bad.push(`${name}: ${problem}`);
      else audit.good.push(name);
    }
  }
  return audit;
}

/** Why a published image is not complete and valid, or undefined when it is. */
export function verifyImage(dir: string, id: string): string | undefined {
  let manifest: Json;
  try {
    manifest = JSON.parse(readFileSync(join(dir, 'manifest.json'), 'utf8'));
  } catch (err) {
    return `no readable manifest (${(err as Error).message})`;
  }
  if (manifest.id !== id) return `manifest id ${manifest.id} is not the directory's name`;
  if (!Array.isArray(manifest.files) || manifest.files.length === 0) return 'manifest lists no files';
  if (!manifest.files.some((f: Json) => /pstree\.img$/.test(f.path))) return 'manifest lists no pstree.img';
  for (const file of manifest.files) {
    const path = join(dir, file.path);
    if (!existsSync(path)) return `${file.path} is missing`;
    if (manifestDigest(readFileSync(path), file.chunkBytes) !== file.sha256) return `${file.path} does not match its sha256`;
  }
  return undefined;
}

/** Pids of live processes (criu, or a stand-in) whose arguments put images under `imagesDir`. */
export function criuProcessesUnder(imagesDir: string): number[] {
  const found: number[] = [];
  for (const entry of readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    const args = readArgs(Number(entry));
    const d = args?.indexOf('-D') ?? -1;
    if (d >= 0 && args![d + 1]?.startsWith(imagesDir + '/') && processState(Number(entry)) !== 'Z') found.push(Number(entry));
  }
  return found;
}

/** Waits until no CRIU process works under imagesDir; the pids that were still there at the end. */
export async function waitNoCriu(imagesDir: string, timeoutMs: number): Promise<number[]> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const left = criuProcessesUnder(imagesDir);
    if (left.length === 0 || Date.now() > deadline) return left;
    await sleep(20);
  }
}

/** Resolves with the CRIU pids as soon as one works under imagesDir (polled every 2 ms). */
export async function whenCriuRuns(imagesDir: string, timeoutMs = 10_000): Promise<number[]> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const pids = criuProcessesUnder(imagesDir);
    if (pids.length || Date.now() > deadline) return pids;
    await sleep(2);
  }
}

/** A dump's real CRIU and the strace that traces it (fixtures/faults/strace-criu.sh). */
export interface TracedCriu {
  readonly criu: number;
  readonly tracer: number;
}

/**
 * Waits until the real CRIU binary (argv[0] `criuPath`) dumps into the directory `tree` (say
 * "tree-1") of an image under `imagesDir`, under strace, and returns it with its tracer; undefined
 * after the limit. CRIU itself, not its wrapper or whatever else names the directory: then it is the
 * very dump a test parked, it is already traced (strace traces the child it forks before that child
 * execs CRIU), and it can be watched by pid from then on.
 */
export async function whenTracedCriuRuns(
  criuPath: string,
  imagesDir: string,
  tree: string,
  timeoutMs = 10_000,
): Promise<TracedCriu | undefined> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    for (const entry of readdirSync('/proc')) {
      if (!/^\d+$/.test(entry)) continue;
      const args = readArgs(Number(entry));
      if (args?.[0] !== criuPath) continue;
      let status: string;
      try {
        status = readFileSync(`/proc/${entry}/status`, 'utf8');
      } catch {
        continue;
      }
      const d = args.indexOf('-D');
      const dir = d >= 0 ? args[d + 1] : undefined;
      if (!dir?.startsWith(imagesDir + '/') || !dir.endsWith(`/${tree}`)) continue;
      const tracer = Number(/^TracerPid:\s+(\d+)/m.exec(status)?.[1] ?? 0);
      if (tracer > 0 && !/^State:\s+Z/m.test(status)) return { criu: Number(entry), tracer };
    }
    if (Date.now() > deadline) return undefined;
    await sleep(2);
  }
}

/** Whether a process is there and not a zombie. */
export function running(pid: number): boolean {
  const state = processState(pid);
  return state !== undefined && state !== 'Z';
}

/** For an after() hook: SIGKILLs CRIU processes this suite's agentds left (they work in our dirs only). */
export function killCriuUnder(imagesDir: string): number {
  let killed = 0;
  for (const pid of criuProcessesUnder(imagesDir)) {
    try {
      process.kill(pid, 'SIGKILL');
      killed++;
    } catch {
      // gone
    }
  }
  return killed;
}

export interface Workload {
  readonly cgroup: TestCgroup;
  readonly pids: number[];
  /** Counter files that advance every 10 ms while the workload runs. */
  readonly counters: string[];
  /** memory-pattern.pl's result file, when there is one. */
  readonly memoryResult?: string;
}

export function counterValue(file: string): number {
  return Number(readFileSync(file, 'utf8').trim() || 'NaN');
}

/**
 * A counting process tree (counter-tree.pl, root + `children`), and optionally memory-pattern.pl
 * with `memoryMiB` MiB as a second tree: two CRIU dumps per checkpoint, the second one long enough
 * to be interrupted in the middle.
 */
export async function startWorkload(
  lab: Lab,
  hierarchy: Hierarchy,
  name: string,
  opts: { children?: number; memoryMiB?: number } = {},
): Promise<Workload> {
  const cgroup = lab.cgroup(hierarchy, name);
  const dir = lab.tempDir(`${name}-files`);
  const children = opts.children ?? 1;
  lab.spawnIn(cgroup, workload('counter-tree.pl'), [dir, String(children)]);
  let expected = children + 1;
  let memoryResult: string | undefined;
  if (opts.memoryMiB) {
    memoryResult = join(dir, 'memory');
    lab.spawnIn(cgroup, workload('memory-pattern.pl'), [String(opts.memoryMiB), memoryResult]);
    expected++;
  }
  await lab.waitForProcesses(cgroup, expected, 10_000);
  const counters = [join(dir, 'root'), ...Array.from({ length: children }, (_, i) => join(dir, `child-${i + 1}`))];
  for (const file of counters) await waitUntil(`${file} to count`, () => counterValue(file) > 0, 10_000);
  if (memoryResult)
    await waitUntil('memory-pattern.pl to fill its memory', () => readFileSync(memoryResult!, 'utf8').startsWith('ready'), 60_000);
  return { cgroup, pids: lab.pidsOf(cgroup), counters, memoryResult };
}

/** Pids of the workload that are gone (or zombies). */
export function lostProcesses(w: Workload): number[] {
  return w.pids.filter((pid) => !pidAlive(pid) || processState(pid) === 'Z');
}

/** Every process alive, none added or lost, and the counters still counting (unless frozen). */
export async function assertWorkloadIntact(w: Workload, running: boolean): Promise<string[]> {
  const problems: string[] = [];
  const lost = lostProcesses(w);
  if (lost.length) problems.push(`processes lost: ${lost.join(', ')}`);
  const now = new Set(readFileSync(join(w.cgroup.dir, 'cgroup.procs'), 'utf8').split('\n').filter(Boolean).map(Number));
  const missing = w.pids.filter((p) => !now.has(p));
  if (missing.length && !lost.length) problems.push(`processes no longer in the cgroup: ${missing.join(', ')}`);
  if (running && !lost.length) {
    for (const file of w.counters) {
      const from = counterValue(file);
      try {
        await waitUntil(`${file} to count on`, () => counterValue(file) > from, 5000);
      } catch {
        problems.push(`${file} stopped counting at ${from}`);
      }
    }
  }
  return problems;
}

/** Asks memory-pattern.pl to check every byte of its memory; "ok N" or what went wrong. */
export async function checkMemory(w: Workload): Promise<string> {
  if (!w.memoryResult) return 'ok';
  const pid = w.pids.find((p) => {
    try {
      return readFileSync(`/proc/${p}/cmdline`, 'utf8').includes('memory-pattern.pl');
    } catch {
      return false;
    }
  });
  if (pid === undefined) return 'memory-pattern.pl is gone';
  writeFileSync(w.memoryResult, '');
  process.kill(pid, 'SIGUSR1');
  try {
    await waitUntil('the memory check', () => /^(ok|bad)/.test(readFileSync(w.memoryResult!, 'utf8')), 30_000);
  } catch {
    return 'no answer to the memory check';
  }
  return readFileSync(w.memoryResult, 'utf8').trim();
}

/** mulberry32: a small seeded PRNG, so that a failing generated case can be replayed from its seed. */
export function prng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** A seed from FAULT_SEED (to replay a run) or a fresh one. */
export function seedFromEnv(): number {
  const given = process.env.FAULT_SEED;
  return given && /^\d+$/.test(given) ? Number(given) : Math.floor(Math.random() * 2 ** 31);
}

/** The figures a test group reports in its closing diagnostic line. */
export class Figures {
  runs = 0;
  faults = 0;
  requests = 0;
  processesLost = 0;
  /** Processes a test killed on purpose (CRIU killed inside a fatal moment), asserted separately. */
  lostOnPurpose = 0;
  cgroupsLeftWrong = 0;
  readonly notes: string[] = [];

  line(group: string): string {
    const parts = [
      `runs=${this.runs}`,
      `faults injected=${this.faults}`,
      `requests tried=${this.requests}`,
      `processes lost=${this.processesLost}`,
      ...(this.lostOnPurpose ? [`lost on purpose=${this.lostOnPurpose}`] : []),
      `cgroups left wrong=${this.cgroupsLeftWrong}`,
    ];
    return `${group}: ${parts.join(', ')}${this.notes.length ? ` (${this.notes.join('; ')})` : ''}`;
  }
}
