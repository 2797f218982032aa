// The test lab: real cgroups under test-unique names, real processes in them, and a cleanup that
// leaves nothing behind even when a test fails or the test process dies. Every test file creates
// one Lab and calls `lab.cleanup()` in an `after` hook; cleanup also checks that nothing is left.

import { spawn, type ChildProcess, type SpawnOptions } from 'node:child_process';
import { existsSync, mkdirSync, readdirSync, readFileSync, rmdirSync, writeFileSync, mkdtempSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { tmpdir } from 'node:os';
import { fileURLToPath } from 'node:url';
import { discoverMounts, type Hierarchy } from '../../src/cgroup/index.js';

export const REPO_ROOT = fileURLToPath(new URL('../../../', import.meta.url));
export const FIXTURES = join(REPO_ROOT, 'fixtures');
export const CGEXEC = join(FIXTURES, 'bin', 'cgexec');

export function workload(name: string): string {
  return join(FIXTURES, 'workloads', name);
}

export function sleepSync(ms: number): void {
  Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, ms);
}

export function pidAlive(pid: number): boolean {
  return existsSync(`/proc/${pid}`);
}

/** The scheduler state letter of a process (R, S, D, T, Z...), or undefined when it is gone. */
export function processState(pid: number): string | undefined {
  try {
    return /^State:\s+(\S)/m.exec(readFileSync(`/proc/${pid}/status`, 'utf8'))?.[1];
  } catch {
    return undefined;
  }
}

/** Waits until `check` returns true (an exception counts as "not yet"); throws naming `what` after the limit. */
export async function waitUntil(what: string, check: () => boolean, timeoutMs = 10_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    try {
      if (check()) return;
    } catch {
      // not there yet
    }
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 10));
  }
}

export const HIERARCHIES: readonly Hierarchy[] = ['v1', 'v2'];

/**
 * Why a hierarchy cannot be tested here, or false when it can. Pass it as a suite's `skip` option
 * so the runner shows the reason.
 *
 * Without AGENTD_TEST_HIERARCHIES a hierarchy this host lacks is skipped (a pure v2 host has no v1
 * freezer, a legacy one no cgroup2). The in-VM entry point sets it to the hierarchies the machine
 * must have (`v2`, `v1` or `v1,v2`): an unlisted hierarchy is skipped, and a listed one that is not
 * mounted throws, so a guest that came up in the wrong layout fails instead of skipping quietly.
 */
export function unavailable(hierarchy: Hierarchy): string | false {
  const mounts = discoverMounts();
  const mounted = hierarchy === 'v1' ? mounts.v1Freezer : mounts.v2;
  const what = hierarchy === 'v1' ? 'v1 freezer' : 'cgroup2';
  const expected = process.env.AGENTD_TEST_HIERARCHIES;
  if (expected !== undefined && expected !== '') {
    const listed = expected.split(',').map((h) => h.trim());
    if (!listed.includes(hierarchy)) return `AGENTD_TEST_HIERARCHIES=${expected} leaves out ${hierarchy}`;
    if (!mounted) {
      throw new Error(
        `AGENTD_TEST_HIERARCHIES=${expected} lists ${hierarchy}, but this host (cgroup mode ${mounts.mode}) has no ${what} hierarchy`,
      );
    }
    return false;
  }
  return mounted ? false : `this host (cgroup mode ${mounts.mode}) has no ${what} hierarchy`;
}

/** Of the hierarchies, the first this host has: for tests that need one, whichever it is. */
export function anyHierarchy(): Hierarchy {
  return HIERARCHIES.find((h) => !unavailable(h)) ?? 'v2';
}

export interface TestCgroup {
  readonly hierarchy: Hierarchy;
  /** Relative to the hierarchy root, as an operator would type it. */
  readonly path: string;
  readonly dir: string;
}

let labCounter = 0;

export class Lab {
  /** Every cgroup of this lab lives under this top-level name, in either hierarchy. */
  readonly prefix: string;
  private readonly cgroups: TestCgroup[] = [];
  private readonly pids = new Set<number>();
  private readonly tempDirs: string[] = [];
  private readonly onExit = () => this.cleanupSync();
  private readonly onSignal = (signal: NodeJS.Signals) => {
    this.cleanupSync();
    process.exit(signal === 'SIGINT' ? 130 : 143);
  };

  constructor(label: string) {
    this.prefix = `agentd-test-${label}-${process.pid}-${++labCounter}`;
    // The runner ends a timed-out test file with a signal: clean up then too.
    process.on('exit', this.onExit);
    process.once('SIGTERM', this.onSignal);
    process.once('SIGINT', this.onSignal);
  }

  mount(hierarchy: Hierarchy): string {
    const mounts = discoverMounts();
    const root = hierarchy === 'v1' ? mounts.v1Freezer : mounts.v2;
    if (!root) throw new Error(`no ${hierarchy} freezer hierarchy on this host`);
    return root;
  }

  /** Creates `<prefix>/<name>` (and any missing parents) in the hierarchy. */
  cgroup(hierarchy: Hierarchy, name: string): TestCgroup {
    const root = this.mount(hierarchy);
    const path = `${this.prefix}/${name}`;
    const parts = path.split('/');
    for (let i = 1; i <= parts.length; i++) {
      const sub = parts.slice(0, i).join('/');
      const dir = join(root, sub);
      if (!existsSync(dir)) {
        mkdirSync(dir);
        this.cgroups.push({ hierarchy, path: sub, dir });
      }
    }
    return { hierarchy, path, dir: join(root, path) };
  }

  tempDir(label = 'tmp'): string {
    const dir = mkdtempSync(join(tmpdir(), `${this.prefix}-${label}-`));
    this.tempDirs.push(dir);
    return dir;
  }

  /** Starts COMMAND inside the cgroup (it joins before it runs). */
  spawnIn(cgroup: TestCgroup, command: string, args: string[] = [], options: SpawnOptions = {}): ChildProcess {
    return this.spawn(CGEXEC, [join(cgroup.dir, 'cgroup.procs'), command, ...args], options);
  }

  /**
   * Starts a process outside any test cgroup, tracked for cleanup. It leads a session of its own
   * (setsid), as a job or daemon would: CRIU dumps only trees whose root is a session leader unless
   * --shell-job is given.
   */
  spawn(command: string, args: string[] = [], options: SpawnOptions = {}): ChildProcess {
    const child = spawn(command, args, { stdio: 'ignore', detached: true, ...options });
    if (child.pid === undefined) throw new Error(`failed to start ${command}`);
    const pid = child.pid;
    this.track(pid);
    child.on('error', () => undefined);
    // Once reaped the pid may be reused by someone else's process: stop tracking it.
    child.on('exit', () => this.pids.delete(pid));
    return child;
  }

  track(pid: number): void {
    this.pids.add(pid);
  }

  /** Waits until the cgroup holds at least `count` processes. */
  // Up to 30 s by default: a perl workload takes seconds to start and fork under software emulation.
  async waitForProcesses(cgroup: TestCgroup, count: number, timeoutMs = 30_000): Promise<number[]> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const pids = this.pidsOf(cgroup);
      if (pids.length >= count) return pids;
      if (Date.now() > deadline) throw new Error(`cgroup ${cgroup.path} has ${pids.length} processes, expected ${count}`);
      await new Promise((r) => setTimeout(r, 10));
    }
  }

  /**
   * Kills every process in the cgroup (all started by this lab) and waits until it is empty, for
   * tests whose workload must not outlive them (a forking workload would load the rest of the run).
   */
  async killIn(cgroup: TestCgroup, timeoutMs = 10_000): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      this.emptyCgroup(cgroup);
      if (!existsSync(cgroup.dir) || this.pidsOf(cgroup).length === 0) return;
      if (Date.now() > deadline)
        throw new Error(`cgroup ${cgroup.path} still has processes ${this.pidsOf(cgroup).join(' ')} after SIGKILL`);
      await new Promise((r) => setTimeout(r, 10));
    }
  }

  pidsOf(cgroup: TestCgroup): number[] {
    return readFileSync(join(cgroup.dir, 'cgroup.procs'), 'utf8').split('\n').filter(Boolean).map(Number);
  }

  async cleanup(): Promise<void> {
    this.cleanupSync();
    process.off('exit', this.onExit);
    process.off('SIGTERM', this.onSignal);
    process.off('SIGINT', this.onSignal);
    const left = this.leftovers();
    if (left.length > 0) throw new Error(`test left behind: ${left.join(', ')}`);
    // Empty test cgroups were found after passing runs, made after this cleanup by something the
    // tests left running: say so when the file ends, with what is there, so the culprit is named.
    process.once('exit', () => {
      const late = this.leftovers();
      if (late.length > 0) process.stderr.write(`lab ${this.prefix}: after its cleanup, found again: ${late.join(', ')}\n`);
    });
  }

  /** What this lab failed to remove: cgroups, live processes. */
  leftovers(): string[] {
    const left: string[] = [];
    for (const hierarchy of ['v1', 'v2'] as const) {
      const root = hierarchy === 'v1' ? discoverMounts().v1Freezer : discoverMounts().v2;
      if (root && existsSync(join(root, this.prefix))) left.push(`cgroup ${hierarchy}:${this.prefix}`);
    }
    for (const pid of this.pids) if (pidAlive(pid) && processState(pid) !== 'Z') left.push(`process ${pid}`);
    return left;
  }

  // Synchronous so it can also run from process.on('exit') when a test crashes.
  private cleanupSync(): void {
    const deepestFirst = [...this.cgroups].sort((a, b) => b.path.length - a.path.length);
    // Killed tasks leave their cgroup only once they have exited: at load 20 that took over the
    // 2 s this loop used to allow (a fault-suite run left an empty cgroup behind). Up to 30 s.
    const deadline = Date.now() + 30_000;
    while (Date.now() < deadline) {
      for (const cgroup of deepestFirst) this.emptyCgroup(cgroup);
      for (const pid of this.pids) this.kill(pid);
      for (const cgroup of deepestFirst) {
        try {
          if (existsSync(cgroup.dir)) rmdirSync(cgroup.dir);
        } catch {
          // EBUSY while killed tasks exit: retried next round.
        }
      }
      if (deepestFirst.every((c) => !existsSync(c.dir))) break;
      sleepSync(10);
    }
    for (const dir of this.tempDirs) rmSync(dir, { recursive: true, force: true });
  }

  // Everything inside a test cgroup was started by this lab (directly or as a child of its processes).
  // Killing pid by pid races a workload that forks all the time; v2's cgroup.kill takes the whole
  // subtree at once, and a v1 cgroup is frozen first so that nothing in it can fork meanwhile.
  private emptyCgroup(cgroup: TestCgroup): void {
    if (!existsSync(cgroup.dir)) return;
    try {
      if (cgroup.hierarchy === 'v2' && existsSync(join(cgroup.dir, 'cgroup.kill'))) writeFileSync(join(cgroup.dir, 'cgroup.kill'), '1');
      if (cgroup.hierarchy === 'v1') writeFileSync(join(cgroup.dir, 'freezer.state'), 'FROZEN');
      for (const pid of this.pidsOf(cgroup)) this.kill(pid);
      // v1-frozen tasks only die once thawed; v2-frozen ones die anyway, but thaw for symmetry.
      const stateFile = join(cgroup.dir, cgroup.hierarchy === 'v1' ? 'freezer.state' : 'cgroup.freeze');
      writeFileSync(stateFile, cgroup.hierarchy === 'v1' ? 'THAWED' : '0');
    } catch {
      // The cgroup vanished meanwhile.
    }
  }

  private kill(pid: number): void {
    try {
      process.kill(pid, 'SIGKILL');
    } catch {
      // Gone already.
    }
  }
}

/** Names of every cgroup directory under a hierarchy root whose name starts with `prefix`. */
export function cgroupsNamed(hierarchy: Hierarchy, prefix: string): string[] {
  const root = hierarchy === 'v1' ? discoverMounts().v1Freezer : discoverMounts().v2;
  if (!root) return [];
  return readdirSync(root).filter((name) => name.startsWith(prefix));
}
