// Where checkpoint images live, and the rule that no half-written image is ever presented as good:
// a checkpoint is written under `.partial-<id>`, gets its manifest (fsynced) last, and only then is
// renamed to `<id>` (an atomic rename within one directory). A failed one is renamed to
// `<id>.failed` and kept only for diagnosis; listings show it as failed, restore refuses it. A
// deleted one is renamed to `.deleting-<id>-<random>` at once, and its files removed after that.

import { randomBytes } from 'node:crypto';
import {
  closeSync,
  existsSync,
  fsyncSync,
  lstatSync,
  mkdirSync,
  openSync,
  readdirSync,
  readFileSync,
  renameSync,
  rmSync,
  statfsSync,
  writeSync,
  constants,
} from 'node:fs';
import { basename, dirname, join } from 'node:path';
import { readdir, rmdir, unlink } from 'node:fs/promises';
import { AgentError, fromSystemError, systemErrno } from '../errors/index.js';
import { makeImageRoot } from './create-root.js';
import type { CheckpointListing, FailureRecord, Manifest } from './types.js';

const PARTIAL_PREFIX = '.partial-';
/** An archive being imported (src/archive): removed like a partial checkpoint when an agent died reading it. */
const IMPORTING_PREFIX = '.importing-';
const DELETING_PREFIX = '.deleting-';
const FAILED_SUFFIX = '.failed';
const ID_PATTERN = /^[A-Za-z0-9][A-Za-z0-9_-]{0,127}$/;
export const MANIFEST_FILE = 'manifest.json';
/** In a failed attempt's directory: what failed and what was lost (written by dump-flow.ts). */
export const FAILURE_FILE = 'failure.json';
// An id as newCheckpointId makes it: the UTC time of the attempt, then 6 hex digits.
const ID_TIME = /^(\d{4})(\d{2})(\d{2})T(\d{2})(\d{2})(\d{2})Z-/;

export function newCheckpointId(now = new Date()): string {
  const stamp = now
    .toISOString()
    .replace(/[-:]/g, '')
    .replace(/\.\d+Z$/, 'Z');
  return `${stamp}-${randomBytes(3).toString('hex')}`;
}

export function checkId(id: unknown): string {
  if (typeof id !== 'string' || !ID_PATTERN.test(id)) {
    throw new AgentError('EINVAL', `invalid checkpoint id ${JSON.stringify(id)}: expected letters, digits, '-' and '_'`);
  }
  return id;
}

/** The time an id of newCheckpointId's form was made at, ISO; undefined for any other id. */
export function timeOfId(id: string): string | undefined {
  const m = ID_TIME.exec(id);
  return m ? `${m[1]}-${m[2]}-${m[3]}T${m[4]}:${m[5]}:${m[6]}.000Z` : undefined;
}

/** Bytes of every regular file under dir (lstat, no symlink followed); 0 for what cannot be read. */
export function treeBytes(dir: string): number {
  let total = 0;
  let entries;
  try {
    entries = readdirSync(dir, { withFileTypes: true });
  } catch {
    return 0;
  }
  for (const entry of entries) {
    const path = join(dir, entry.name);
    if (entry.isDirectory()) total += treeBytes(path);
    else if (entry.isFile()) {
      try {
        total += lstatSync(path).size;
      } catch {
        // removed meanwhile
      }
    }
  }
  return total;
}

/** Listing order: oldest first (a failed attempt by the time it began), then by id. */
export function byCreation(a: CheckpointListing, b: CheckpointListing): number {
  return (a.createdAt ?? '').localeCompare(b.createdAt ?? '') || a.id.localeCompare(b.id);
}

export class ImageStore {
  constructor(readonly root: string) {}

  /** Creates the image root (0700) if needed; refuses a symlink in its place, and pseudo-filesystems. */
  ensureRoot(): void {
    try {
      makeImageRoot(this.root);
    } catch (err) {
      // The root may come from a request: a name the filesystem cannot take is the client's error.
      const errno = systemErrno(err);
      if (errno === 'ENAMETOOLONG' || errno === 'ELOOP')
        throw new AgentError('EINVAL', `cannot create image directory ${this.root}: ${errno}`, { cause: err });
      throw fromSystemError(err, `cannot create image directory ${this.root}`);
    }
  }

  /**
   * Whether anything may be at the root's path: a missing root (or one the filesystem cannot name)
   * holds no checkpoints; it is made on first use. Anything else (a symlink loop...) is left to
   * ensureRoot to name.
   */
  exists(): boolean {
    try {
      lstatSync(this.root);
      return true;
    } catch (err) {
      return !['ENOENT', 'ENOTDIR', 'ENAMETOOLONG'].includes(systemErrno(err) ?? '');
    }
  }

  /** Whether this root holds checkpoint `id`, good or failed. */
  has(id: string): boolean {
    const dir = this.finalDir(id);
    return existsSync(dir) || existsSync(dir + FAILED_SUFFIX);
  }

  freeBytes(): number {
    try {
      const stats = statfsSync(this.root);
      return Number(stats.bavail) * Number(stats.bsize);
    } catch (err) {
      throw fromSystemError(err, `cannot read free space of ${this.root}`);
    }
  }

  /** A fresh temporary directory for a checkpoint being written. Never followed through a symlink. */
  createPartial(id: string): string {
    const dir = join(this.root, PARTIAL_PREFIX + checkId(id));
    try {
      mkdirSync(dir, { mode: 0o700 });
    } catch (err) {
      throw fromSystemError(err, `cannot create image directory ${dir}`);
    }
    return dir;
  }

  /** A fresh directory for an archive being imported, under a name no reader takes for a checkpoint. */
  createImporting(): string {
    const dir = join(this.root, IMPORTING_PREFIX + randomBytes(6).toString('hex'));
    try {
      mkdirSync(dir, { mode: 0o700 });
    } catch (err) {
      throw fromSystemError(err, `cannot create import directory ${dir}`);
    }
    return dir;
  }

  finalDir(id: string): string {
    return join(this.root, checkId(id));
  }

  /** Atomically presents a complete checkpoint under its final name. */
  publish(partialDir: string, id: string): string {
    const finalDir = this.finalDir(id);
    renameSync(partialDir, finalDir);
    fsyncDirectory(this.root);
    return finalDir;
  }

  /** Keeps a failed attempt under a name no reader takes for good, or removes it. */
  discard(partialDir: string, id: string, keepForDiagnosis: boolean): string | undefined {
    if (!existsSync(partialDir)) return undefined;
    if (!keepForDiagnosis) {
      rmSync(partialDir, { recursive: true, force: true });
      return undefined;
    }
    const failedDir = join(this.root, checkId(id) + FAILED_SUFFIX);
    try {
      renameSync(partialDir, failedDir);
      return failedDir;
    } catch {
      rmSync(partialDir, { recursive: true, force: true });
      return undefined;
    }
  }

  /** Temporary directories left by an agent that died mid-checkpoint or mid-import. */
  partials(): string[] {
    return this.entries()
      .filter((name) => name.startsWith(PARTIAL_PREFIX) || name.startsWith(IMPORTING_PREFIX))
      .map((name) => join(this.root, name));
  }

  list(): CheckpointListing[] {
    const listings: CheckpointListing[] = [];
    for (const name of this.entries()) {
      if (name.startsWith('.')) continue;
      const dir = join(this.root, name);
      if (name.endsWith(FAILED_SUFFIX)) {
        listings.push(failedListing(this.readFailure(name.slice(0, -FAILED_SUFFIX.length))));
        continue;
      }
      if (!ID_PATTERN.test(name)) continue;
      try {
        const manifest = this.readManifest(name);
        listings.push({
          id: manifest.id,
          dir,
          status: 'good',
          cgroup: manifest.cgroup,
          hierarchy: manifest.hierarchy,
          createdAt: manifest.createdAt,
          bytes: manifest.files.reduce((sum, f) => sum + f.size, 0),
          processes: manifest.trees.reduce((sum, t) => sum + t.processes.length, 0),
        });
      } catch {
        listings.push({ id: name, dir, status: 'failed', ...(timeOfId(name) ? { createdAt: timeOfId(name) } : {}) });
      }
    }
    return listings.sort(byCreation);
  }

  /** Whether `id` is a good checkpoint here (its final directory). */
  hasGood(id: string): boolean {
    return existsSync(this.finalDir(id));
  }

  /** Whether `id` is a failed attempt here (`<id>.failed`). */
  hasFailed(id: string): boolean {
    return existsSync(this.finalDir(id) + FAILED_SUFFIX);
  }

  /**
   * What failed attempt `id` recorded (failure.json), with its size now. An attempt recorded before
   * failure.json existed, or whose record cannot be read, still has its id's time and its size.
   */
  readFailure(id: string): FailureRecord {
    const dir = this.finalDir(id) + FAILED_SUFFIX;
    const base: FailureRecord = { id, status: 'failed', dir, bytes: treeBytes(dir), ...(timeOfId(id) ? { startedAt: timeOfId(id) } : {}) };
    let record: Record<string, unknown>;
    try {
      record = JSON.parse(readFileSync(join(dir, FAILURE_FILE), 'utf8')) as Record<string, unknown>;
    } catch {
      return base;
    }
    const text = (v: unknown) => (typeof v === 'string' ? v : undefined);
    const error = record.error as { code?: unknown; message?: unknown } | undefined;
    const hierarchy = record.hierarchy === 'v1' || record.hierarchy === 'v2' ? record.hierarchy : undefined;
    return {
      ...base,
      ...(text(record.cgroup) ? { cgroup: text(record.cgroup) } : {}),
      ...(hierarchy ? { hierarchy } : {}),
      ...(text(record.startedAt) ? { startedAt: text(record.startedAt) } : {}),
      ...(text(record.failedAt) ? { failedAt: text(record.failedAt) } : {}),
      ...(typeof error?.code === 'string' && typeof error.message === 'string'
        ? { error: { code: error.code, message: error.message } }
        : {}),
      ...(Array.isArray(record.lost) ? { lost: record.lost as FailureRecord['lost'] } : {}),
    };
  }

  readManifest(id: string): Manifest {
    const dir = this.finalDir(id);
    let text: string;
    try {
      text = readFileSync(join(dir, MANIFEST_FILE), 'utf8');
    } catch (err) {
      if (systemErrno(err) === 'ENOENT') {
        const failed = existsSync(dir + FAILED_SUFFIX);
        throw new AgentError(
          'ENOENT',
          failed ? `checkpoint ${id} failed and has no usable image (see ${dir + FAILED_SUFFIX})` : `no checkpoint ${id} in ${this.root}`,
        );
      }
      throw fromSystemError(err, `cannot read manifest of checkpoint ${id}`);
    }
    try {
      const manifest = JSON.parse(text) as Manifest;
      if (manifest.formatVersion !== 1 || manifest.id !== id) throw new Error('unexpected format or id');
      // Readers use these without further checks: a manifest lacking them is unreadable, not a crash.
      if (
        typeof manifest.options !== 'object' ||
        manifest.options === null ||
        !Array.isArray(manifest.trees) ||
        !Array.isArray(manifest.files)
      ) {
        throw new Error('options, trees or files missing');
      }
      return manifest;
    } catch (err) {
      throw new AgentError('EIO', `manifest of checkpoint ${id} is unreadable: ${(err as Error).message}`);
    }
  }

  /**
   * Deletes checkpoint `id`, good and failed. Its directories are renamed to hidden `.deleting-*`
   * names first, at once and atomically, so it is gone from listings, show and restore before its
   * files are; those are then removed off the event loop (removeTree). A delete cut short (the
   * agent stopped) leaves a `.deleting-*` directory, which recovery removes at the next start.
   */
  async delete(id: string): Promise<void> {
    const dirs = [this.finalDir(id), this.finalDir(id) + FAILED_SUFFIX].filter((d) => existsSync(d));
    if (dirs.length === 0) throw new AgentError('ENOENT', `no checkpoint ${id} in ${this.root}`);
    const doomed: string[] = [];
    for (const dir of dirs) {
      const hidden = join(this.root, `${DELETING_PREFIX}${basename(dir)}-${randomBytes(3).toString('hex')}`);
      try {
        renameSync(dir, hidden);
      } catch (err) {
        throw fromSystemError(err, `cannot delete checkpoint ${id}: renaming ${dir} failed`);
      }
      doomed.push(hidden);
    }
    fsyncDirectory(this.root);
    for (const dir of doomed) {
      try {
        await removeTree(dir);
      } catch (err) {
        throw fromSystemError(err, `checkpoint ${id} is deleted, but removing its files from ${dir} failed (the next start retries)`);
      }
    }
  }

  /** Directories of deletes that were cut short (the agent stopped while it removed the files). */
  deletions(): string[] {
    return this.entries()
      .filter((name) => name.startsWith(DELETING_PREFIX))
      .map((name) => join(this.root, name));
  }

  private entries(): string[] {
    try {
      return readdirSync(this.root);
    } catch (err) {
      if (systemErrno(err) === 'ENOENT') return [];
      throw fromSystemError(err, `cannot list ${this.root}`);
    }
  }
}

/**
 * Removes a directory tree one entry at a time, each an awaited fs call: the event loop stays free
 * for other requests and the watchdog ping (a recursive rmSync of a multi-GB image held the
 * agent's only thread until the last file was gone), and only one libuv threadpool thread is busy
 * with it at a time (fs.promises.rm starts every entry of a directory at once, which queues the
 * file reads of a running checkpoint behind thousands of unlinks). A symlink is removed, never
 * followed. Entries that vanish meanwhile (another agent finishing the same delete) are fine.
 */
export async function removeTree(path: string): Promise<void> {
  const gone = (err: unknown) => {
    if (systemErrno(err) !== 'ENOENT') throw err;
  };
  let entries;
  try {
    entries = await readdir(path, { withFileTypes: true });
  } catch (err) {
    if (systemErrno(err) === 'ENOTDIR') return unlink(path).catch(gone);
    return gone(err);
  }
  for (const entry of entries) {
    const child = join(path, entry.name);
    if (entry.isDirectory()) await removeTree(child);
    else await unlink(child).catch(gone);
  }
  await rmdir(path).catch(gone);
}

/** Writes a file and fsyncs it, refusing to follow a symlink planted at its name. */
export function writeFileDurably(path: string, content: string): void {
  const fd = openSync(path, constants.O_WRONLY | constants.O_CREAT | constants.O_EXCL | constants.O_NOFOLLOW, 0o600);
  try {
    writeSync(fd, content);
    fsyncSync(fd);
  } finally {
    closeSync(fd);
  }
}

/** Replaces a file atomically: the new content is written and fsynced beside it, then renamed over it. */
export function replaceFileDurably(path: string, content: string): void {
  const temporary = `${path}.new`;
  rmSync(temporary, { force: true });
  writeFileDurably(temporary, content);
  renameSync(temporary, path);
  fsyncDirectory(dirname(path));
}

export function fsyncDirectory(dir: string): void {
  const fd = openSync(dir, constants.O_RDONLY | constants.O_DIRECTORY);
  try {
    fsyncSync(fd);
  } finally {
    closeSync(fd);
  }
}

/** A failed attempt as listings show it: its cgroup, time, size and error. */
function failedListing(f: FailureRecord): CheckpointListing {
  return {
    id: f.id,
    dir: f.dir,
    status: 'failed',
    ...(f.cgroup !== undefined ? { cgroup: f.cgroup } : {}),
    ...(f.hierarchy !== undefined ? { hierarchy: f.hierarchy } : {}),
    ...(f.startedAt !== undefined ? { createdAt: f.startedAt } : {}),
    ...(f.bytes !== undefined ? { bytes: f.bytes } : {}),
    ...(f.error !== undefined ? { error: f.error } : {}),
  };
}
