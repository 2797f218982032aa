// The C side of the benchmark, built with gcc at bench time from fixtures/bench/: the workload
// forker and the freezer probe (the baseline). See the comments at the top of each C file.

import { execFileSync, type ChildProcess } from 'node:child_process';
import { join } from 'node:path';
import { createInterface, type Interface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import type { Hierarchy } from '../src/cgroup/index.js';
import type { BenchCgroup, BenchLab } from './lab.js';

export const REPO_ROOT = fileURLToPath(new URL('../../', import.meta.url));
export const BENCH_FIXTURES = join(REPO_ROOT, 'fixtures', 'bench');

export interface NativeTools {
  readonly forker: string;
  readonly probe: string;
  readonly compiler: string;
}

/** Compiles both programs into a temporary directory of the lab. Throws with gcc's output. */
export function buildNative(lab: BenchLab): NativeTools {
  const out = lab.tempDir('bin');
  const build = (name: string) => {
    const binary = join(out, name);
    execFileSync('gcc', ['-O2', '-Wall', '-Wextra', '-Werror', '-o', binary, join(BENCH_FIXTURES, `${name}.c`)], {
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    return binary;
  };
  const compiler = execFileSync('gcc', ['--version'], { encoding: 'utf8' }).split('\n')[0];
  return { forker: build('forker'), probe: build('freezer-probe'), compiler };
}

/** Lines from a child's stdout, one at a time, in order. */
class LineReader {
  private readonly lines: string[] = [];
  private readonly waiting: ((line: string | undefined) => void)[] = [];
  private ended = false;
  private readonly rl: Interface;

  constructor(child: ChildProcess) {
    this.rl = createInterface({ input: child.stdout! });
    this.rl.on('line', (line) => {
      const waiter = this.waiting.shift();
      if (waiter) waiter(line);
      else this.lines.push(line);
    });
    this.rl.on('close', () => {
      this.ended = true;
      for (const waiter of this.waiting.splice(0)) waiter(undefined);
    });
  }

  next(timeoutMs: number, what: string): Promise<string> {
    const queued = this.lines.shift();
    if (queued !== undefined) return Promise.resolve(queued);
    if (this.ended) return Promise.reject(new Error(`${what}: the program exited`));
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.waiting.splice(this.waiting.indexOf(onLine), 1);
        reject(new Error(`${what}: no answer within ${timeoutMs} ms`));
      }, timeoutMs);
      const onLine = (line: string | undefined) => {
        clearTimeout(timer);
        if (line === undefined) reject(new Error(`${what}: the program exited`));
        else resolve(line);
      };
      this.waiting.push(onLine);
    });
  }
}

/** A running forker: N processes (itself and N-1 children) in one cgroup. */
export interface Workload {
  readonly pid: number;
  readonly count: number;
}

export type WorkKind = 'sleep' | 'busy';

export async function startWorkload(
  lab: BenchLab,
  tools: NativeTools,
  cgroup: BenchCgroup,
  count: number,
  kind: WorkKind,
): Promise<Workload> {
  const procs = [join(cgroup.dir, 'cgroup.procs'), ...(cgroup.cpuDir ? [join(cgroup.cpuDir, 'cgroup.procs')] : [])];
  const child = lab.spawn(tools.forker, [String(count), kind, ...procs], { stdio: ['ignore', 'pipe', 'inherit'] });
  const reader = new LineReader(child);
  const line = await reader.next(60_000, `forker of ${count} ${kind} processes in ${cgroup.dir}`);
  if (line !== `ready ${count}`) throw new Error(`forker in ${cgroup.dir} said "${line}"`);
  return { pid: child.pid!, count };
}

export type ProbeCommand = 'freeze' | 'thaw' | 'freeze-poll10' | 'thaw-poll10';
const COMMAND_LETTER: Record<ProbeCommand, string> = { freeze: 'f', thaw: 't', 'freeze-poll10': 'F', 'thaw-poll10': 'T' };

/** The C baseline, kept running for a cgroup (or a set of them); each command answers its time. */
export class FreezerProbe {
  private constructor(
    private readonly child: ChildProcess,
    private readonly reader: LineReader,
    private readonly what: string,
  ) {}

  static async start(lab: BenchLab, tools: NativeTools, hierarchy: Hierarchy, dirs: readonly string[]): Promise<FreezerProbe> {
    const child = lab.spawn(tools.probe, [hierarchy, ...dirs], { stdio: ['pipe', 'pipe', 'inherit'] });
    const what = `freezer-probe ${hierarchy} (${dirs.length} cgroup${dirs.length === 1 ? '' : 's'})`;
    const probe = new FreezerProbe(child, new LineReader(child), what);
    const ready = await probe.reader.next(10_000, what);
    if (ready !== 'ready') throw new Error(`${what} said "${ready}"`);
    return probe;
  }

  /** Runs one command; resolves with the time the probe measured, in milliseconds. */
  async run(command: ProbeCommand): Promise<number> {
    this.child.stdin!.write(`${COMMAND_LETTER[command]}\n`);
    const line = await this.reader.next(30_000, `${this.what} ${command}`);
    const match = /^ok (\d+)$/.exec(line);
    if (!match) throw new Error(`${this.what} ${command}: ${line}`);
    return Number(match[1]) / 1e6;
  }

  async stop(): Promise<void> {
    if (this.child.exitCode !== null || this.child.signalCode !== null) return;
    const exited = new Promise((resolve) => this.child.once('exit', resolve));
    this.child.stdin!.end('q\n');
    await exited;
  }
}
