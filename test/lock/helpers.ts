// Shared by the lock tests: a CgroupControl on a private run directory, the kernel's own freezer
// files read and written behind agentd's back, and flock(1) as an independent judge of the lock.

import assert from 'node:assert/strict';
import { spawnSync, type ChildProcess } from 'node:child_process';
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { resolveCgroup, type CgroupRef, type FreezerState } from '../../src/cgroup/index.js';
import { isAgentError } from '../../src/errors/index.js';
import { CgroupControl } from '../../src/lock/index.js';
import { REPO_ROOT, type Lab, type TestCgroup } from '../helpers/lab.js';

export { beginCheckpoint } from '../../fixtures/lock/begin-checkpoint.js';

export const CONTENDER = join(REPO_ROOT, 'dist', 'fixtures', 'lock', 'contender.js');

/** A control whose run directory does not exist yet, so the lock module creates it. */
export function makeControl(lab: Lab): CgroupControl {
  return new CgroupControl({ runDir: join(lab.tempDir('run'), 'agentd') });
}

export function refOf(cgroup: TestCgroup): CgroupRef {
  return resolveCgroup(cgroup.path, { hierarchy: cgroup.hierarchy });
}

/** The kernel's word, read straight from the cgroup files. */
export function kernelState(cgroup: TestCgroup): FreezerState {
  if (cgroup.hierarchy === 'v1') return readFileSync(join(cgroup.dir, 'freezer.state'), 'utf8').trim() as FreezerState;
  const frozen = /^frozen 1$/m.test(readFileSync(join(cgroup.dir, 'cgroup.events'), 'utf8'));
  const asked = readFileSync(join(cgroup.dir, 'cgroup.freeze'), 'utf8').trim() === '1';
  return frozen ? 'FROZEN' : asked ? 'FREEZING' : 'THAWED';
}

/** Writes the kernel file directly, as a tool that bypasses agentd would. */
export function writeKernel(cgroup: TestCgroup, want: 'FROZEN' | 'THAWED'): void {
  if (cgroup.hierarchy === 'v1') writeFileSync(join(cgroup.dir, 'freezer.state'), want);
  else writeFileSync(join(cgroup.dir, 'cgroup.freeze'), want === 'FROZEN' ? '1' : '0');
}

export async function waitForKernel(cgroup: TestCgroup, want: FreezerState, timeoutMs = 5000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (kernelState(cgroup) !== want) {
    if (Date.now() > deadline) throw new Error(`cgroup ${cgroup.path} did not reach ${want}`);
    await sleep(1);
  }
}

export function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

/**
 * Whether `flock -n LOCKFILE true` gets the lock (exit 0) or finds it held (exit 1). No file, no
 * holder: agentd removes a lock file when it releases it, and flock(1) would create one.
 */
export function flockFree(lockFile: string): boolean {
  if (!existsSync(lockFile)) return true;
  const result = spawnSync('flock', ['-n', lockFile, 'true'], { encoding: 'utf8' });
  if (result.status !== 0 && result.status !== 1) throw new Error(`flock failed: ${result.stderr}`);
  return result.status === 0;
}

/** Asserts an EBUSY AgentError whose message matches. */
export function busy(pattern: RegExp): (err: unknown) => boolean {
  return (err: unknown) => {
    assert.ok(isAgentError(err, 'EBUSY'), `expected EBUSY, got ${String(err)}`);
    assert.match(err.message, pattern);
    return true;
  };
}

/** The counter workload's file: it stops changing while frozen. */
export async function waitForCounter(file: string): Promise<string> {
  const deadline = Date.now() + 5000;
  for (;;) {
    try {
      const text = readFileSync(file, 'utf8');
      if (Number(text.trim()) >= 1) return text;
    } catch {
      // not written yet
    }
    if (Date.now() > deadline) throw new Error(`counter ${file} never started`);
    await sleep(10);
  }
}

/**
 * A cooperating shell tool holding the lock: one process, so killing it drops the lock. It waits
 * for the lock (-w) because our own flockFree() probes hold it for an instant. (Plain
 * `flock FILE sleep` would fork `sleep` with the locked fd, and the orphan would keep the lock.)
 */
export async function holdWithShellTool(lab: Lab, lockFile: string): Promise<ChildProcess> {
  // `9>>` creates the file when there is none (agentd removes a lock file when it releases it).
  const tool = lab.spawn('sh', ['-c', 'exec 9>>"$1" && flock -w 5 9 && exec sleep 100000', 'sh', lockFile]);
  const deadline = Date.now() + 5000;
  while (flockFree(lockFile)) {
    if (tool.exitCode !== null || Date.now() > deadline) throw new Error(`the shell tool did not take ${lockFile}`);
    await sleep(5);
  }
  return tool;
}

export async function killAndWait(child: ChildProcess): Promise<void> {
  const gone = child.exitCode !== null || child.signalCode !== null ? Promise.resolve() : new Promise((r) => child.once('exit', r));
  child.kill('SIGKILL');
  await gone;
}
