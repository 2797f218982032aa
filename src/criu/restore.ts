// `criu restore -d` of one process tree from its images.

import { spawn } from 'node:child_process';
import { readFile, realpath, rm, rmdir } from 'node:fs/promises';
import { join } from 'node:path';
import { AgentError } from '../errors/index.js';
import { parseMountinfo } from '../proc/index.js';
import { checkAbsolute, networkLockArgs } from './dump.js';
import type { NetworkLock } from './find.js';
import { runCriu, type CriuRunOptions, type CriuRunResult } from './run.js';

/**
 * Where one cgroup controller's tree goes on restore (`--cgroup-root CONTROLLER:PATH`): the dumped
 * task's cgroup for that controller is replaced by PATH (relative to the hierarchy's root).
 * controller 'freezer' for a v1 freezer cgroup, '' for the v2 (unified) hierarchy. Measured: a
 * missing target cgroup is created (a v1 one FROZEN, from the image's freezer state; a v2 one
 * running), an existing one is used as it is. The global form without a controller is not offered:
 * it moves every controller (memory, cpuset...) too and fails on cpuset's exclusive flags.
 */
export interface CriuCgroupRoot {
  readonly controller: string;
  readonly path: string;
}

export type ManageCgroupsMode = 'none' | 'props' | 'soft' | 'full' | 'strict' | 'ignore';

export interface CriuRestoreOptions extends CriuRunOptions {
  /** Absolute directory holding the images of one tree. */
  readonly imagesDir: string;
  /** Absolute; where the log, the pidfile and stats-restore go (-W). Default: imagesDir. */
  readonly workDir?: string;
  /**
   * --shell-job. A tree dumped with --shell-job also needs a terminal to restore into, which a
   * detached restore from this process does not have ("Don't have tty to inherit session from"):
   * use startCriuRestoreOnTerminal for those.
   */
  readonly shellJob?: boolean;
  /** --network-lock, always (as on dump, ./dump.ts): the agent's (CriuInfo.networkLock). */
  readonly networkLock?: NetworkLock | null;
  readonly fileLocks?: boolean;
  readonly cgroupRoots?: readonly CriuCgroupRoot[];
  /** --manage-cgroups. Default: CRIU's own (soft: recreates a missing cgroup with its properties). */
  readonly manageCgroups?: ManageCgroupsMode;
  /**
   * --leave-stopped: the restored tasks stay stopped (SIGSTOP). Used to restore several trees of
   * one cgroup and start them together: restore each stopped, freeze the cgroup, SIGCONT them, thaw.
   */
  readonly leaveStopped?: boolean;
  /** Log file name inside the work dir. Default restore.log. */
  readonly logName?: string;
  /** Absolute pidfile path. Default restore.pid in the work dir; an old one is removed first (CRIU refuses to overwrite it). */
  readonly pidFile?: string;
}

export interface CriuRestoreResult extends CriuRunResult {
  /** The restored tree's root pid (the same as at dump time: CRIU restores pids). */
  readonly pid: number;
}

const DEFAULT_LOG_NAME = 'restore.log';

/** Where a restore's own files go: the work dir (default: the images dir), the pidfile and the log. */
export function restoreFiles(opts: CriuRestoreOptions): { workDir: string; pidFile: string; logPath: string } {
  const workDir = opts.workDir ?? opts.imagesDir;
  if (opts.pidFile !== undefined) checkAbsolute('the pidfile', opts.pidFile);
  return { workDir, pidFile: opts.pidFile ?? join(workDir, 'restore.pid'), logPath: join(workDir, opts.logName ?? DEFAULT_LOG_NAME) };
}

/**
 * The pid CRIU wrote to its pidfile, or undefined while there is none. CRIU writes it with one
 * write() and no newline, so a read sees either nothing or the whole pid.
 */
export async function readPidFile(path: string): Promise<number | undefined> {
  const text = await readFile(path, 'utf8').catch(() => '');
  const pid = Number.parseInt(text.trim(), 10);
  return Number.isInteger(pid) && pid > 0 ? pid : undefined;
}

/**
 * The argument array for a restore. Never restore into a cgroup that is frozen: CRIU moves its
 * own restorer into the cgroup, freezes with it and never returns (measured, v1 and v2).
 */
export function restoreArgs(opts: CriuRestoreOptions, pidFile: string, detach = true): string[] {
  checkAbsolute('the images directory', opts.imagesDir);
  const args = ['restore', '-D', opts.imagesDir];
  if (opts.workDir !== undefined) {
    checkAbsolute('the work directory', opts.workDir);
    args.push('-W', opts.workDir);
  }
  if (detach) args.push('-d');
  args.push('-o', opts.logName ?? DEFAULT_LOG_NAME, '-v4', '--pidfile', pidFile);
  if (opts.shellJob) args.push('--shell-job');
  // --tcp-established on every restore, whatever the dump was asked: CRIU saves a connection a
  // process still holds an fd of after both ends closed it (a server that has just hung up on a
  // client) in a connected state even without it at dump, and then refuses to restore it without
  // the flag ("Connected TCP socket in image", measured with 4.2.1, docs/criu.md). An image with no
  // such socket is restored the same with it as without.
  args.push('--tcp-established', ...networkLockArgs(opts.networkLock));
  if (opts.fileLocks) args.push('--file-locks');
  if (opts.leaveStopped) args.push('--leave-stopped');
  if (opts.manageCgroups) args.push(`--manage-cgroups=${opts.manageCgroups}`);
  for (const root of opts.cgroupRoots ?? []) {
    if (root.controller.includes(':') || !root.path.startsWith('/')) {
      throw new AgentError('EINVAL', `bad cgroup root ${JSON.stringify(root)}: the controller has no ':' and the path starts with '/'`);
    }
    args.push('--cgroup-root', `${root.controller}:${root.path}`);
  }
  return args;
}

/**
 * Unmounts and removes the cgroup yards a killed restore left in its work dir. CRIU mounts a tmpfs
 * `.criu.cgyard.XXXXXX` there with every cgroup hierarchy below it, in the host's mount namespace,
 * and detaches it only at its normal end: measured, each restore killed by SIGKILL left 11 mounts
 * behind. Returns the yards removed.
 */
export async function removeCgroupYards(workDir: string): Promise<string[]> {
  // mountinfo shows resolved paths (/tmp may be a symlink elsewhere).
  const prefix = join(await realpath(workDir).catch(() => workDir), '.criu.cgyard.');
  const mounts = parseMountinfo(await readFile('/proc/self/mountinfo', 'utf8').catch(() => ''));
  const yards = new Set<string>();
  for (const { mountPoint: path } of mounts) {
    if (!path.startsWith(prefix)) continue;
    const end = path.indexOf('/', prefix.length);
    yards.add(end === -1 ? path : path.slice(0, end));
  }
  for (const yard of yards) {
    // Lazy, like CRIU's own cleanup: detaches the tmpfs and every hierarchy mounted below it at once.
    await new Promise<void>((resolve) =>
      spawn('umount', ['-l', yard], { stdio: 'ignore' })
        .on('close', () => resolve())
        .on('error', () => resolve()),
    );
    await rmdir(yard).catch(() => undefined);
  }
  return [...yards];
}

/**
 * Runs a restore and, if it did not end normally, clears the cgroup yards CRIU may have left
 * mounted (see removeCgroupYards); the error's details then list them under removedYards.
 */
export async function withYardCleanup<T>(workDir: string, run: () => Promise<T>): Promise<T> {
  try {
    return await run();
  } catch (err) {
    const removed = await removeCgroupYards(workDir);
    if (removed.length > 0 && err instanceof AgentError) {
      throw new AgentError(err.code, err.message, { cause: err.cause, details: { ...err.details, removedYards: removed } });
    }
    throw err;
  }
}

/** Restores one tree, detached (-d), and returns its root pid. See runCriu for the errors. */
export async function runCriuRestore(opts: CriuRestoreOptions): Promise<CriuRestoreResult> {
  const { workDir, pidFile, logPath } = restoreFiles(opts);
  const args = restoreArgs(opts, pidFile);
  await rm(pidFile, { force: true }).catch(() => undefined); // a read-only dir fails later, in CRIU, with a clear log
  const result = await withYardCleanup(workDir, () => runCriu(`criu restore from ${opts.imagesDir}`, args, logPath, opts));
  const pid = await readPidFile(pidFile);
  if (pid === undefined) {
    throw new AgentError('ECRIU', `criu restore from ${opts.imagesDir} succeeded but wrote no pid to ${pidFile}`, {
      details: { logPath: result.logPath, args: result.args },
    });
  }
  return { ...result, pid };
}
