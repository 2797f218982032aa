// The lock files themselves: a private directory, files opened without following symlinks, a
// kernel flock, and the diagnostic record rewritten in place on the locked fd.

import {
  chmodSync,
  closeSync,
  constants,
  fstatSync,
  ftruncateSync,
  lstatSync,
  mkdirSync,
  openSync,
  readSync,
  statSync,
  unlinkSync,
  writeSync,
} from 'node:fs';
import { AgentError, fromSystemError, systemErrno } from '../errors/index.js';
import { tryLockExclusive, unlock } from './flock.js';
import { parseHolder, serializeHolder } from './holder.js';
import type { LockHolder } from './types.js';

// libuv already opens every file close-on-exec; saying so explicitly documents that a lock fd must
// never leak into a child such as CRIU, where it would outlive the agent and keep the lock held.
const O_CLOEXEC = process.platform === 'linux' ? 0o2000000 : 0;
// O_NONBLOCK: a FIFO planted at a lock name must not hang open(); it is refused by the checks below.
const COMMON_FLAGS = constants.O_NOFOLLOW | O_CLOEXEC | constants.O_NONBLOCK;
const MAX_RECORD_BYTES = 64 * 1024;
// agentd never changes its effective uid, so it is read once rather than at every open.
const EUID = process.geteuid?.();

/**
 * Creates `<runDir>/locks` 0700 (and runDir 0700 if missing) and checks nobody else can write to it.
 * Every freeze, thaw and checkpoint comes through here, so the usual case (both there and right)
 * costs two stats and throws nothing: a mkdir answered EEXIST, as it was, built an exception each
 * time (about a tenth of an in-process freeze, node --cpu-prof, docs/bench.md).
 */
export function ensureLockDir(runDir: string, locksDir: string): void {
  try {
    let run = statSync(runDir, { throwIfNoEntry: false });
    if (run === undefined) {
      mkdirSync(runDir, { recursive: true, mode: 0o700 });
      chmodSync(runDir, 0o700);
      run = statSync(runDir);
    }
    if (!run.isDirectory()) throw new AgentError('EINVAL', `run directory ${runDir} is not a directory`);
    // Whoever may write to the run directory may rename our locks directory away and put another in
    // its place between our check of it and our open of a lock file in it. The sticky bit (as /tmp
    // has) forbids renaming what is not yours; otherwise it must be writable by its owner only.
    if ((run.mode & 0o022) !== 0 && (run.mode & 0o1000) === 0) {
      throw new AgentError(
        'EACCES',
        `run directory ${runDir} is writable by group or others (mode ${(run.mode & 0o7777).toString(8)}): anyone could replace its locks directory; run chmod go-w ${runDir}`,
      );
    }
    let st = lstatSync(locksDir, { throwIfNoEntry: false });
    if (st === undefined) {
      try {
        mkdirSync(locksDir, { mode: 0o700 });
      } catch (err) {
        if (systemErrno(err) !== 'EEXIST') throw err;
      }
      st = lstatSync(locksDir);
    }
    // Lock files are opened by name, so the directory holding them must be ours alone and a real
    // directory, never a symlink that could move every lock somewhere else.
    if (!st.isDirectory()) {
      throw new AgentError(
        'EACCES',
        `lock directory ${locksDir} is not a directory (a symlink or file was planted there); refusing to use it`,
      );
    }
    const euid = EUID ?? st.uid;
    if (st.uid !== euid) {
      throw new AgentError(
        'EACCES',
        `lock directory ${locksDir} is owned by uid ${st.uid}, not by agentd (uid ${euid}); refusing to use it`,
      );
    }
    if ((st.mode & 0o7777) !== 0o700) chmodSync(locksDir, 0o700);
  } catch (err) {
    throw fromSystemError(err, `cannot prepare lock directory ${locksDir}`);
  }
}

function openFailure(err: unknown, path: string): AgentError {
  // O_NOFOLLOW makes open() fail with ELOOP on a symlink in the last component.
  if (systemErrno(err) === 'ELOOP') {
    return new AgentError(
      'EACCES',
      `lock file ${path} is a symbolic link; refusing to follow it (remove it if nobody should have put it there)`,
      {
        cause: err,
        details: { lockFile: path },
      },
    );
  }
  return fromSystemError(err, `failed to open lock file ${path}`);
}

/** The identity of an opened lock file, and its size when it was opened. */
export interface OpenedLock {
  readonly fd: number;
  readonly dev: number;
  readonly ino: number;
  readonly size: number;
}

/** Refuses anything at a lock name that is not a plain file of ours with a single name. */
function checkOpened(fd: number, path: string): OpenedLock {
  const st = fstatSync(fd);
  let problem: string | undefined;
  if (!st.isFile()) problem = 'is not a regular file';
  else if (st.uid !== (EUID ?? st.uid)) problem = `is owned by uid ${st.uid}, not by agentd`;
  // A hard link planted at the name would make the record overwrite some other file.
  else if (st.nlink > 1) problem = `has ${st.nlink} hard links`;
  if (problem) {
    closeSync(fd);
    throw new AgentError('EACCES', `lock file ${path} ${problem}; refusing to use it`, { details: { lockFile: path } });
  }
  return { fd, dev: st.dev, ino: st.ino, size: st.size };
}

/** Opens (creating if needed) a lock file for locking and writing, with what its fstat said. */
export function openForLocking(path: string): OpenedLock {
  let fd: number;
  try {
    fd = openSync(path, constants.O_RDWR | constants.O_CREAT | COMMON_FLAGS, 0o600);
  } catch (err) {
    throw openFailure(err, path);
  }
  return checkOpened(fd, path);
}

/**
 * Opens an existing lock file; undefined when there is none. Most lock files looked for do not exist
 * (a status probe's, an ancestor's), and a failed openSync builds an exception with its stack, which
 * cost a state request more than the open itself (node --cpu-prof, docs/bench.md): an lstat told not
 * to throw says so without one (and still lets the open refuse a symlink, dangling or not). A file created after it is simply not seen, as if we had looked a moment earlier;
 * one removed after it is the ENOENT still caught below.
 */
function openExisting(path: string, writable = false): number | undefined {
  if (lstatSync(path, { throwIfNoEntry: false }) === undefined) return undefined;
  let fd: number;
  try {
    fd = openSync(path, (writable ? constants.O_RDWR : constants.O_RDONLY) | COMMON_FLAGS);
  } catch (err) {
    if (systemErrno(err) === 'ENOENT') return undefined;
    throw openFailure(err, path);
  }
  checkOpened(fd, path);
  return fd;
}

/** Whether the lock file opened as `opened` still is the file at path: a forget() may have unlinked it meanwhile. */
export function isAtPath(opened: Pick<OpenedLock, 'dev' | 'ino'>, path: string): boolean {
  const atPath = lstatSync(path, { throwIfNoEntry: false });
  return atPath !== undefined && atPath.ino === opened.ino && atPath.dev === opened.dev;
}

/** Whether fd still is the file at path: a forget() may have unlinked it between our open and our lock. */
export function stillAtPath(fd: number, path: string): boolean {
  const ours = fstatSync(fd);
  return isAtPath(ours, path);
}

// One buffer for every record read: each read is synchronous and decoded before it returns. A new
// 64 KiB buffer per read (as it was) lived outside the heap until the collector got round to it,
// like the control files' buffers did (docs/bench.md).
const RECORD_BUFFER = Buffer.allocUnsafe(MAX_RECORD_BYTES);

export function readRecord(fd: number, path: string): LockHolder | undefined {
  const length = readSync(fd, RECORD_BUFFER, 0, RECORD_BUFFER.length, 0);
  return parseHolder(RECORD_BUFFER.toString('utf8', 0, length), path);
}

/**
 * Rewrites the record: pwrite at offset 0, then ftruncate to its length. In this order a reader
 * never finds the file empty; at worst it sees the new line followed by the tail of the old one,
 * and only the first line is ever parsed. `knownLength` is the file's length as the caller last
 * left it: a record at least that long covers the old one whole and the ftruncate would change
 * nothing (most rewrites: `freezing` and `finished` have the same length), so it is skipped. Returns
 * the new length.
 */
export function writeRecord(fd: number, path: string, holder: LockHolder, knownLength?: number): number {
  const bytes = Buffer.from(serializeHolder(holder));
  try {
    writeSync(fd, bytes, 0, bytes.length, 0);
    if (knownLength === undefined || bytes.length < knownLength) ftruncateSync(fd, bytes.length);
  } catch (err) {
    throw fromSystemError(err, `failed to write lock file ${path}`);
  }
  return bytes.length;
}

/** What inspectLock saw of a lock file. */
export interface LockFileState {
  exists: boolean;
  locked: boolean;
  record?: LockHolder;
}

/**
 * Whether a lock file is locked, without disturbing a holder: a separate read-only fd tries the
 * lock and, if it got it, gives it back at once. The record is read either way.
 */
export function inspectLock(path: string): LockFileState {
  const fd = openExisting(path);
  if (fd === undefined) return { exists: false, locked: false };
  try {
    const locked = !tryLockExclusive(fd, path);
    const record = readRecord(fd, path);
    if (!locked) unlock(fd, path);
    return { exists: true, locked, record };
  } finally {
    closeSync(fd);
  }
}

/**
 * Removes the lock file whose lock fd holds, before the holder unlocks: anyone who opened it and
 * locks it after us finds it no longer at the path (stillAtPath) and starts again with a fresh one,
 * so two holders never lock different files for the same cgroup. Only the file fd is: a path that
 * names another file by now (it cannot while we hold the lock, unless someone broke the rules) is
 * left alone.
 */
export function removeHeld(fd: number, path: string, opened?: Pick<OpenedLock, 'dev' | 'ino'>): void {
  try {
    if (opened ? isAtPath(opened, path) : stillAtPath(fd, path)) unlinkSync(path);
  } catch (err) {
    if (systemErrno(err) !== 'ENOENT') throw fromSystemError(err, `failed to remove lock file ${path}`);
  }
}

export type RemoveOutcome = { outcome: 'absent' } | { outcome: 'removed' } | { outcome: 'kept' } | { outcome: 'held'; record?: LockHolder };

/**
 * Removes a lock file only if nobody holds it, and, when `unless` is given, only if its record (read
 * under the lock, so no holder can change it meanwhile) does not make `unless` true.
 */
export function removeIfUnlocked(path: string, unless?: (record: LockHolder | undefined) => boolean): RemoveOutcome {
  const fd = openExisting(path, true);
  if (fd === undefined) return { outcome: 'absent' };
  try {
    if (!tryLockExclusive(fd, path)) return { outcome: 'held', record: readRecord(fd, path) };
    if (unless?.(readRecord(fd, path))) return { outcome: 'kept' };
    removeHeld(fd, path);
    return { outcome: 'removed' };
  } finally {
    closeSync(fd);
  }
}

export { closeSync as closeLockFd };
