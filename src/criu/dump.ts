// `criu dump` of one process tree held in a (frozen) cgroup.

import { isAbsolute, join } from 'node:path';
import { AgentError } from '../errors/index.js';
import type { DumpNetworkLock } from './network-lock.js';
import { runCriu, type CriuRunOptions, type CriuRunResult } from './run.js';

export interface CriuDumpOptions extends CriuRunOptions {
  /** Root of the process tree to dump. */
  readonly pid: number;
  /** Absolute; must exist. The images, the log and stats-dump are written here. */
  readonly imagesDir: string;
  /**
   * Absolute cgroup directory holding the tree: a v1 freezer cgroup (/sys/fs/cgroup/freezer/X) or
   * a v2 one. Always passed, because CRIU waits forever on a tree frozen by a cgroup it was not
   * told about. CRIU seizes EVERY task of this cgroup by ptrace, also those outside the tree
   * ("Unexpected process PID in the freezer cgroup"), and holds them stopped until it puts the
   * freezer back: measured here, a second tree in the same cgroup does not run during the dump.
   */
  readonly freezeCgroup: string;
  /** --shell-job: needed for a tree on a terminal ("Found slave peer index 0 without correspond master peer"). */
  readonly shellJob?: boolean;
  readonly tcpEstablished?: boolean;
  /**
   * --network-lock (CriuInfo.networkLock), on every dump: CRIU locks not only the connections
   * --tcp-established saves but also a closed one a process still holds an fd of (a server that has
   * just hung up on a client), and its default lock, iptables, fails where iptables-restore is
   * missing (docs/criu.md, "Established TCP connections"). `skip` for a tree with no TCP socket
   * (networkLockFor, ./network-lock.ts). Default: CRIU's.
   */
  readonly networkLock?: DumpNetworkLock;
  readonly fileLocks?: boolean;
  /** Log file name inside imagesDir. Default dump.log. */
  readonly logName?: string;
  /** CRIU's -v level for the dump's log, 0 to 4. Default DUMP_LOG_LEVEL. */
  readonly logLevel?: number;
  /**
   * The last pre-dump of this tree, relative to imagesDir (CRIU resolves it from there): with it,
   * --track-mem and --prev-images-dir, so that only pages written since that pre-dump are dumped
   * and the others are left in the pre-dump's images (CRIU links them by a `parent` symlink).
   */
  readonly prevImagesDir?: string;
}

/**
 * CRIU's log level for dumps and pre-dumps: 3 (errors, warnings, and what CRIU does at each step,
 * "Dumping finished successfully" among them). 4 adds a line per memory area, file and syscall run
 * in the task: 12 500 lines for the bench's 20-process tree against 4 400 at 3, and CRIU writes each
 * line as it goes, with the workload frozen; measured here, 4 cost that dump ~30 ms of CPU over 3
 * (docs/bench.md). `agentd --criu-log-level 4` brings the detail back for a hunt.
 */
export const DUMP_LOG_LEVEL = 3;

/** EINVAL unless level is a CRIU log level (0 to 4). */
export function checkLogLevel(level: number): number {
  if (!Number.isInteger(level) || level < 0 || level > 4) throw new AgentError('EINVAL', `CRIU's log level is 0 to 4, got ${level}`);
  return level;
}

export type CriuPreDumpOptions = Omit<CriuDumpOptions, 'tcpEstablished' | 'networkLock' | 'fileLocks'>;

export function checkAbsolute(what: string, path: string): void {
  if (!isAbsolute(path)) throw new AgentError('EINVAL', `${what} must be an absolute path, got "${path}"`);
}

/** --network-lock LOCK, or nothing for CRIU's default. */
export function networkLockArgs(lock: DumpNetworkLock | undefined): string[] {
  return lock ? ['--network-lock', lock] : [];
}

/**
 * The argument array for a dump. --leave-running is always given: with a cgroup frozen beforehand
 * CRIU then puts the freezer back to FROZEN when it is done; without it CRIU kills the tasks and
 * leaves the cgroup THAWED and empty (docs/criu.md), which our checkpoint contract forbids.
 */
export function dumpArgs(opts: CriuDumpOptions): string[] {
  if (!Number.isInteger(opts.pid) || opts.pid <= 0) throw new AgentError('EINVAL', `not a pid: ${opts.pid}`);
  checkAbsolute('the images directory', opts.imagesDir);
  checkAbsolute('the cgroup to freeze', opts.freezeCgroup);
  const args = ['dump', '-t', String(opts.pid), '-D', opts.imagesDir, '--freeze-cgroup', opts.freezeCgroup, '--leave-running'];
  args.push('-o', opts.logName ?? 'dump.log', `-v${checkLogLevel(opts.logLevel ?? DUMP_LOG_LEVEL)}`);
  if (opts.shellJob) args.push('--shell-job');
  if (opts.tcpEstablished) args.push('--tcp-established');
  args.push(...networkLockArgs(opts.networkLock));
  if (opts.fileLocks) args.push('--file-locks');
  if (opts.prevImagesDir !== undefined) args.push(...prevArgs(opts.prevImagesDir));
  return args;
}

function prevArgs(prev: string): string[] {
  if (isAbsolute(prev) || prev.split('/').some((part) => part === '')) {
    throw new AgentError('EINVAL', `the previous images directory must be relative to the images directory, got "${prev}"`);
  }
  return ['--track-mem', '--prev-images-dir', prev];
}

/**
 * The argument array for a pre-dump: the tree's memory copied while it runs (CRIU freezes the
 * cgroup only while it drains the pages, then lets it go), memory tracking reset so that the next
 * dump takes only what is written after. The first has no previous images; each next one has the
 * one before.
 */
export function preDumpArgs(opts: CriuPreDumpOptions): string[] {
  if (!Number.isInteger(opts.pid) || opts.pid <= 0) throw new AgentError('EINVAL', `not a pid: ${opts.pid}`);
  checkAbsolute('the images directory', opts.imagesDir);
  checkAbsolute('the cgroup to freeze', opts.freezeCgroup);
  const args = ['pre-dump', '-t', String(opts.pid), '-D', opts.imagesDir, '--freeze-cgroup', opts.freezeCgroup];
  args.push('-o', opts.logName ?? 'pre-dump.log', `-v${checkLogLevel(opts.logLevel ?? DUMP_LOG_LEVEL)}`);
  if (opts.shellJob) args.push('--shell-job');
  args.push(...(opts.prevImagesDir !== undefined ? prevArgs(opts.prevImagesDir) : ['--track-mem']));
  return args;
}

/** Pre-dumps the tree rooted at opts.pid into opts.imagesDir; stopped like a dump (when safe). */
export async function runCriuPreDump(opts: CriuPreDumpOptions): Promise<CriuRunResult> {
  const args = preDumpArgs(opts);
  return runCriu(`criu pre-dump of pid ${opts.pid}`, args, join(opts.imagesDir, opts.logName ?? 'pre-dump.log'), {
    stop: 'when-safe',
    ...opts,
  });
}

/**
 * Dumps the tree rooted at opts.pid into opts.imagesDir. See runCriu for the errors. A timeout or a
 * cancel stops CRIU only while it holds no task (stop 'when-safe'): killing it while it holds the
 * tree can kill the tree (docs/criu-faults.md).
 */
export async function runCriuDump(opts: CriuDumpOptions): Promise<CriuRunResult> {
  const args = dumpArgs(opts);
  return runCriu(`criu dump of pid ${opts.pid}`, args, join(opts.imagesDir, opts.logName ?? 'dump.log'), { stop: 'when-safe', ...opts });
}
