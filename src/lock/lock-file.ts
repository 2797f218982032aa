// The lock files themselves: a private directory, files opened without following symlinks, a
// kernel flock, and the diagnostic record rewritten in place on the locked fd.

import {
  chmodSync,
  closeSync,
  constants,
  existsSync,
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

/** Creates `<runDir>/locks` 0700 (and runDir 0700 if missing) and checks nobody else can write to it. */
export function ensureLockDir(runDir: string, locksDir: string): void {
  try {
    if (!existsSync(runDir)) {
      mkdirSync(runDir, { recursive: true, mode: 0o700 });
      chmodSync(runDir, 0o700);
    }
    const run = statSync(runDir);
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
    try {
      mkdirSync(locksDir, { mode: 0o700 });
    } catch (err) {
      if (systemErrno(err) !== 'EEXIST') throw err;
    }
    // Lock files are opened by name, so the directory holding them must be ours alone and a real
    // directory, never a symlink that could move every lock somewhere else.
    const st = lstatSync(locksDir);
    if (!st.isDirectory()) {
      throw new AgentError(
        'EACCES',
        `lock directory ${locksDir} is not a directory (a symlink or file was planted there); refusing to use it`,
      );
    }
    const euid = process.geteuid?.() ?? st.uid;
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

/** Refuses anything at a lock name that is not a plain file of ours with a single name. */
function checkOpened(fd: number, path: string): void {
  const st = fstatSync(fd);
  let problem: string | undefined;
  if (!st.isFile()) problem = 'is not a regular file';
  else if (st.uid !== (process.geteuid?.() ?? st.uid)) problem = `is owned by uid ${st.uid}, not by agentd`;
  // A hard link planted at the name would make the record overwrite some other file.
  else if (st.nlink > 1) problem = `has ${st.nlink} hard links`;
  if (problem) {
    closeSync(fd);
    throw new AgentError('EACCES', `lock file ${path} ${problem}; refusing to use it`, { details: { lockFile: path } });
  }
}

/** Opens (creating if needed) a lock file for locking and writing. */
export function openForLocking(path: string): number {
  let fd: number;
  try {
    fd = openSync(path, constants.O_RDWR | constants.O_CREAT | COMMON_FLAGS, 0o600);
  } catch (err) {
    throw openFailure(err, path);
  }
  checkOpened(fd, path);
  return fd;
}

/** Opens an existing lock file; undefined when there is none. */
function openExisting(path: string, writable = false): number | undefined {
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

/** Whether fd still is the file at path: a forget() may have unlinked it between our open and our lock. */
export function stillAtPath(fd: number, path: string): boolean {
  try {
    const atPath = lstatSync(path);
    const ours = fstatSync(fd);
    return atPath.ino === ours.ino && atPath.dev === ours.dev;
  } catch (err) {
    if (systemErrno(err) === 'ENOENT') return false;
    throw err;
  }
}

export function readRecord(fd: number, path: string): LockHolder | undefined {
  const buffer = Buffer.allocUnsafe(MAX_RECORD_BYTES);
  const length = readSync(fd, buffer, 0, buffer.length, 0);
  return parseHolder(buffer.toString('utf8', 0, length), path);
}

/**
 * Rewrites the record: pwrite at offset 0, then ftruncate to its length. In this order a reader
 * never finds the file empty; at worst it sees the new line followed by the tail of the old one,
 * and only the first line is ever parsed.
 */
export function writeRecord(fd: number, path: string, holder: LockHolder): void {
  const bytes = Buffer.from(serializeHolder(holder));
  try {
    writeSync(fd, bytes, 0, bytes.length, 0);
    ftruncateSync(fd, bytes.length);
  } catch (err) {
    throw fromSystemError(err, `failed to write lock file ${path}`);
  }
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
export function removeHeld(fd: number, path: string): void {
  try {
    if (stillAtPath(fd, path)) unlinkSync(path);
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
