// Everything the benchmark creates, and a cleanup that removes it all: cgroups (with every process
// in them), processes started by pid, tmpfs mounts, temporary directories. Cleanup is synchronous
// so it also runs from process.on('exit'), after an uncaught error, and on SIGINT/SIGTERM/SIGHUP.
// A benchmark killed with SIGKILL cannot clean up: the next run sweeps what it left (sweepStale).

import { spawn, spawnSync, type ChildProcess, type SpawnOptions } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { discoverMounts, type Hierarchy } from '../src/cgroup/index.js';

/** Every cgroup, temp dir and mount of a run is named `agentd-bench-<pid>-...`. */
const PREFIX = 'agentd-bench-';

export interface BenchCgroup {
  readonly hierarchy: Hierarchy;
  /** Relative to the hierarchy root. */
  readonly path: string;
  readonly dir: string;
  /**
   * A v1 cpu cgroup of the same name, where the host has one (hybrid and legacy hosts), that the
   * workload joins too: its tasks then compete for the CPU as one group with the default weight,
   * as a service's tasks do under systemd, instead of 1000 spinning tasks each weighing as much as
   * the agent, the benchmark and every other process on the machine.
   */
  readonly cpuDir?: string;
}

/** The v1 hierarchy carrying the cpu controller, if any. */
function cpuRoot(): string | undefined {
  for (const line of readFileSync('/proc/self/mountinfo', 'utf8').split('\n')) {
    const [before, after] = line.split(' - ');
    if (!after) continue;
    const fields = after.split(' ');
    if (fields[0] === 'cgroup' && (fields[2] ?? '').split(',').includes('cpu') && before.split(' ')[3] === '/') return before.split(' ')[4];
  }
  return undefined;
}

/** Kills every process of a cgroup that has no freezer (the cpu group) and removes it. */
function removePlainCgroupSync(dir: string): boolean {
  for (let round = 0; round < 1000 && existsSync(dir); round++) {
    for (const child of listChildren(dir)) removePlainCgroupSync(join(dir, child));
    for (const pid of pidsOf(dir)) kill(pid);
    try {
      rmdirSync(dir);
    } catch {
      sleepSync(10);
    }
  }
  return !existsSync(dir);
}

export function hierarchyRoot(hierarchy: Hierarchy): string | undefined {
  const mounts = discoverMounts();
  return hierarchy === 'v1' ? mounts.v1Freezer : mounts.v2;
}

export function sleepSync(ms: number): void {
  Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, ms);
}

export function pidsOf(dir: string): number[] {
  try {
    return readFileSync(join(dir, 'cgroup.procs'), 'utf8').split('\n').filter(Boolean).map(Number);
  } catch {
    return [];
  }
}

function kill(pid: number, signal: NodeJS.Signals = 'SIGKILL'): void {
  try {
    process.kill(pid, signal);
  } catch {
    // Gone already.
  }
}

/**
 * Kills every process of a cgroup and removes it. v2: cgroup.kill (frozen tasks die at once).
 * v1: a frozen task ignores SIGKILL until thawed, so kill, then thaw. rmdir fails with EBUSY while
 * killed tasks exit: retried for up to ~10 s. Returns whether the directory is gone.
 */
export function removeCgroupSync(hierarchy: Hierarchy, dir: string): boolean {
  for (let round = 0; round < 1000 && existsSync(dir); round++) {
    for (const child of listChildren(dir)) removeCgroupSync(hierarchy, join(dir, child));
    try {
      if (hierarchy === 'v2') {
        if (pidsOf(dir).length > 0) writeFileSync(join(dir, 'cgroup.kill'), '1');
        writeFileSync(join(dir, 'cgroup.freeze'), '0');
      } else {
        for (const pid of pidsOf(dir)) kill(pid);
        writeFileSync(join(dir, 'freezer.state'), 'THAWED');
      }
      rmdirSync(dir);
    } catch {
      sleepSync(10);
    }
  }
  return !existsSync(dir);
}

function listChildren(dir: string): string[] {
  try {
    return readdirSync(dir, { withFileTypes: true })
      .filter((e) => e.isDirectory())
      .map((e) => e.name);
  } catch {
    return [];
  }
}

function pidAlive(pid: number): boolean {
  return existsSync(`/proc/${pid}`);
}

function mountPoints(): string[] {
  return readFileSync('/proc/self/mountinfo', 'utf8')
    .split('\n')
    .map((line) => line.split(' ')[4])
    .filter((m): m is string => m !== undefined);
}

/** Removes what an earlier benchmark, killed before it could clean up, left behind. */
export function sweepStale(): string[] {
  const swept: string[] = [];
  const ownerDead = (name: string) => {
    const pid = Number(/^agentd-bench-(\d+)-/.exec(name)?.[1]);
    return Number.isInteger(pid) && pid > 0 && pid !== process.pid && !pidAlive(pid);
  };
  for (const mount of mountPoints()) {
    const name = mount.split('/').pop() ?? '';
    if (mount.startsWith(tmpdir()) && ownerDead(name) && spawnSync('umount', [mount]).status === 0) swept.push(`mount ${mount}`);
  }
  for (const hierarchy of ['v1', 'v2'] as const) {
    const root = hierarchyRoot(hierarchy);
    if (!root) continue;
    for (const name of listChildren(root).filter((n) => n.startsWith(PREFIX) && ownerDead(n))) {
      if (removeCgroupSync(hierarchy, join(root, name))) swept.push(`cgroup ${hierarchy}:${name}`);
    }
  }
  const cpu = cpuRoot();
  for (const name of cpu ? listChildren(cpu).filter((n) => n.startsWith(PREFIX) && ownerDead(n)) : []) {
    if (removePlainCgroupSync(join(cpu!, name))) swept.push(`cgroup cpu:${name}`);
  }
  for (const name of readdirSync(tmpdir()).filter((n) => n.startsWith(PREFIX) && ownerDead(n))) {
    const dir = join(tmpdir(), name);
    if (!mountPoints().some((m) => m.startsWith(dir))) {
      rmSync(dir, { recursive: true, force: true });
      swept.push(`dir ${dir}`);
    }
  }
  return swept;
}

let labs = 0;

export class BenchLab {
  readonly prefix = `${PREFIX}${process.pid}-${++labs}`;
  private readonly cgroups: BenchCgroup[] = [];
  private readonly cpuDirs: string[] = [];
  private readonly pids = new Set<number>();
  private readonly mounts: string[] = [];
  private readonly dirs: string[] = [];
  private readonly onExit = () => this.cleanupSync();
  private readonly onSignal = (signal: NodeJS.Signals) => {
    process.stderr.write(`\nbench: ${signal}: cleaning up\n`);
    this.cleanupSync();
    process.exit(signal === 'SIGINT' ? 130 : signal === 'SIGHUP' ? 129 : 143);
  };

  constructor() {
    process.on('exit', this.onExit);
    for (const signal of ['SIGINT', 'SIGTERM', 'SIGHUP'] as const) process.on(signal, this.onSignal);
  }

  /** Creates `<prefix>/<name>` in the hierarchy (the top directory once per hierarchy). */
  cgroup(hierarchy: Hierarchy, name: string): BenchCgroup {
    const root = hierarchyRoot(hierarchy);
    if (!root) throw new Error(`this host has no ${hierarchy} freezer hierarchy`);
    const top = join(root, this.prefix);
    if (!existsSync(top)) {
      mkdirSync(top);
      this.cgroups.push({ hierarchy, path: this.prefix, dir: top });
    }
    const path = `${this.prefix}/${name}`;
    const cpuDir = this.cpuGroup(`${this.prefix}/${hierarchy}-${name}`);
    const cgroup: BenchCgroup = { hierarchy, path, dir: join(root, path), ...(cpuDir ? { cpuDir } : {}) };
    mkdirSync(cgroup.dir);
    this.cgroups.push(cgroup);
    return cgroup;
  }

  private cpuGroup(path: string): string | undefined {
    const root = cpuRoot();
    if (!root) return undefined;
    const top = join(root, this.prefix);
    if (!existsSync(top)) {
      mkdirSync(top);
      this.cpuDirs.push(top);
    }
    const dir = join(root, path);
    mkdirSync(dir);
    this.cpuDirs.push(dir);
    return dir;
  }

  /** Kills everything in the cgroup and removes it now (rather than at the end of the run). */
  removeCgroup(cgroup: BenchCgroup): void {
    if (!removeCgroupSync(cgroup.hierarchy, cgroup.dir)) throw new Error(`could not remove cgroup ${cgroup.dir}`);
    const i = this.cgroups.indexOf(cgroup);
    if (i >= 0) this.cgroups.splice(i, 1);
    if (cgroup.cpuDir) {
      if (!removePlainCgroupSync(cgroup.cpuDir)) throw new Error(`could not remove cgroup ${cgroup.cpuDir}`);
      this.cpuDirs.splice(this.cpuDirs.indexOf(cgroup.cpuDir), 1);
    }
  }

  tempDir(label: string): string {
    const dir = mkdtempSync(join(tmpdir(), `${this.prefix}-${label}-`));
    this.dirs.push(dir);
    return dir;
  }

  /** Mounts a tmpfs of `size` (mount(8) syntax, e.g. "2g") on a new temporary directory. */
  tmpfs(label: string, size: string): string {
    const dir = this.tempDir(label);
    const result = spawnSync('mount', ['-t', 'tmpfs', '-o', `size=${size},mode=0700`, 'tmpfs', dir], { encoding: 'utf8' });
    if (result.status !== 0) throw new Error(`mount tmpfs on ${dir} failed: ${result.stderr.trim()}`);
    this.mounts.push(dir);
    return dir;
  }

  unmount(dir: string): void {
    const i = this.mounts.indexOf(dir);
    if (i < 0) return;
    const result = spawnSync('umount', [dir], { encoding: 'utf8' });
    if (result.status !== 0) throw new Error(`umount ${dir} failed: ${result.stderr.trim()}`);
    this.mounts.splice(i, 1);
    rmdirSync(dir);
    this.dirs.splice(this.dirs.indexOf(dir), 1);
  }

  /**
   * Starts a process, tracked until it exits: the cleanup kills it by pid (and never a pid that
   * was reaped, and so may belong to someone else by then).
   */
  spawn(command: string, args: readonly string[], options: SpawnOptions = {}): ChildProcess {
    const child = spawn(command, args, { stdio: 'ignore', ...options });
    if (child.pid === undefined) throw new Error(`failed to start ${command}`);
    const pid = child.pid;
    this.pids.add(pid);
    child.on('error', () => undefined);
    child.on('exit', () => this.pids.delete(pid));
    return child;
  }

  /** What this lab has not removed (for the test, and the final check). */
  leftovers(): string[] {
    const left: string[] = [];
    for (const hierarchy of ['v1', 'v2'] as const) {
      const root = hierarchyRoot(hierarchy);
      if (root && existsSync(join(root, this.prefix))) left.push(`cgroup ${hierarchy}:${this.prefix}`);
    }
    const cpu = cpuRoot();
    if (cpu && existsSync(join(cpu, this.prefix))) left.push(`cgroup cpu:${this.prefix}`);
    for (const pid of this.pids) if (pidAlive(pid) && !isZombie(pid)) left.push(`process ${pid}`);
    const mounted = mountPoints();
    for (const dir of this.mounts) if (mounted.includes(dir)) left.push(`mount ${dir}`);
    for (const dir of this.dirs) if (existsSync(dir)) left.push(`dir ${dir}`);
    return left;
  }

  /** Removes everything and detaches the exit and signal handlers. */
  dispose(): string[] {
    this.cleanupSync();
    process.off('exit', this.onExit);
    for (const signal of ['SIGINT', 'SIGTERM', 'SIGHUP'] as const) process.off(signal, this.onSignal);
    return this.leftovers();
  }

  private cleanupSync(): void {
    for (const pid of this.pids) kill(pid);
    const deepestFirst = [...this.cgroups].sort((a, b) => b.path.length - a.path.length);
    for (const cgroup of deepestFirst) removeCgroupSync(cgroup.hierarchy, cgroup.dir);
    // After the freezer cgroups: their removal thawed the tasks, so the kills here are delivered.
    for (const dir of [...this.cpuDirs].sort((a, b) => b.length - a.length)) removePlainCgroupSync(dir);
    this.cgroups.length = 0;
    for (let round = 0; round < 100 && [...this.pids].some((pid) => pidAlive(pid) && !isZombie(pid)); round++) sleepSync(10);
    const mounted = mountPoints();
    for (const dir of [...this.mounts].reverse().filter((d) => mounted.includes(d))) {
      if (spawnSync('umount', [dir]).status !== 0) spawnSync('umount', ['-l', dir]);
    }
    for (const dir of this.dirs) rmSync(dir, { recursive: true, force: true });
  }
}

function isZombie(pid: number): boolean {
  try {
    return /^State:\s+Z/m.test(readFileSync(`/proc/${pid}/status`, 'utf8'));
  } catch {
    return true;
  }
}
