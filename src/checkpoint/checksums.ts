// The checksums of a checkpoint's files: computing them for the manifest (describeFiles) and
// checking a manifest's against the files before a restore or an export (verifyFiles). Both run on
// the hashing threads (./hash-pool.ts), a large file in pieces (./digest.ts) shared by all of them,
// the largest files first so that the small ones fill in beside them.

import { lstatSync, readdirSync } from 'node:fs';
import { join, relative } from 'node:path';
import { AgentError } from '../errors/index.js';
import { chunkBytesFor, chunkCount, combineChunks, isChunkBytes } from './digest.js';
import type { FollowedFile } from './follow.js';
import { sha256Files, sha256Piece } from './hash-pool.js';
import type { ImageFile } from './types.js';

export interface DigestOptions {
  /** Files not to list, relative to the directory. */
  readonly skip?: readonly string[];
  /** Pieces already being hashed while CRIU wrote (./follow.ts), by relative path. */
  readonly followed?: ReadonlyMap<string, FollowedFile>;
  /** Told of the bytes of each file or piece once hashed (pieces hashed before this call are not told again). */
  readonly onBytes?: (bytes: number) => void;
}

/**
 * Every regular file under dir with its size and digest, paths relative to dir, sorted. A file
 * followed while CRIU wrote it keeps the pieces already hashed, if it is still the same file.
 */
export async function describeFiles(dir: string, options: DigestOptions = {}): Promise<ImageFile[]> {
  const skip = options.skip ?? [];
  const found: { path: string; size: number; dev: number; ino: number }[] = [];
  const walk = (sub: string) => {
    for (const entry of readdirSync(sub, { withFileTypes: true })) {
      const path = join(sub, entry.name);
      if (entry.isDirectory()) walk(path);
      else if (entry.isFile() && !skip.includes(relative(dir, path))) {
        const stat = lstatSync(path);
        found.push({ path: relative(dir, path), size: stat.size, dev: stat.dev, ino: stat.ino });
      }
    }
  };
  walk(dir);
  const bySize = [...found].sort((a, b) => b.size - a.size);
  const plain = plainDigests(dir, bySize, (f) => chunkBytesFor(f.size) === undefined, options.onBytes);
  const digests = await settleAll(
    bySize.map((f) => {
      const whole = plain.get(f.path);
      if (whole) return whole.then((sha256) => ({ sha256 }));
      const followed = options.followed?.get(f.path);
      const same = followed && followed.dev === f.dev && followed.ino === f.ino ? followed.pieces : [];
      return fileDigest(join(dir, f.path), f.size, same, options.onBytes);
    }),
  );
  const files = bySize.map((f, i) => ({ path: f.path, size: f.size, ...digests[i] }));
  return files.sort((a, b) => a.path.localeCompare(b.path));
}

/** Checks every file of a manifest against its recorded size and digest; every byte is read. */
export async function verifyFiles(dir: string, files: readonly ImageFile[], onBytes?: (bytes: number) => void): Promise<void> {
  for (const file of files) {
    let size: number;
    try {
      size = lstatSync(join(dir, file.path)).size;
    } catch {
      throw new AgentError('EIO', `image file ${file.path} is missing from ${dir}: the checkpoint is corrupt`);
    }
    if (size !== file.size) throw mismatch(dir, file);
    if (file.chunkBytes !== undefined && !isChunkBytes(file.chunkBytes)) throw mismatch(dir, file);
  }
  const bySize = [...files].sort((a, b) => b.size - a.size);
  const plain = plainDigests(dir, bySize, (f) => f.chunkBytes === undefined, onBytes);
  const digests = await Promise.allSettled(
    bySize.map((f) => {
      const whole = plain.get(f.path);
      return whole ? whole.then((sha256) => ({ sha256 })) : fileDigest(join(dir, f.path), f.size, [], onBytes, f.chunkBytes ?? null);
    }),
  );
  bySize.forEach((file, i) => {
    const d = digests[i];
    if (d.status === 'rejected' || d.value.sha256 !== file.sha256) throw mismatch(dir, file);
  });
}

/** The plain sha256 of every file `plain` picks, started together (small files several to a thread's job), by path. */
function plainDigests<F extends { path: string; size: number }>(
  dir: string,
  files: readonly F[],
  plain: (file: F) => boolean,
  onBytes: ((bytes: number) => void) | undefined,
): Map<string, Promise<string>> {
  const picked = files.filter(plain);
  const started = sha256Files(picked.map((f) => ({ path: join(dir, f.path), size: f.size })));
  return new Map(
    picked.map((f, i) => [
      f.path,
      started[i].then((sha256) => {
        onBytes?.(f.size);
        return sha256;
      }),
    ]),
  );
}

/**
 * One file's digest. `chunkBytes`: the piece size a manifest recorded (null: a plain sha256),
 * or, when undefined, the one chunkBytesFor gives a new file of this size.
 */
async function fileDigest(
  path: string,
  size: number,
  started: readonly Promise<string>[],
  onBytes: ((bytes: number) => void) | undefined,
  chunkBytes: number | null | undefined = undefined,
): Promise<{ sha256: string; chunkBytes?: number }> {
  const piece = chunkBytes === undefined ? chunkBytesFor(size) : (chunkBytes ?? undefined);
  if (piece === undefined) {
    const [sha256] = sha256Files([{ path, size }]);
    const digest = await sha256;
    onBytes?.(size);
    return { sha256: digest };
  }
  const count = chunkCount(size, piece);
  // Pieces started while CRIU wrote were all of CHUNK_BYTES; a file that somehow ended before them is hashed afresh.
  const kept = started.length <= count && started.length * piece <= size ? [...started] : [];
  const pieces = [...kept];
  for (let k = kept.length; k < count; k++) {
    const length = Math.min(piece, size - k * piece);
    const p = sha256Piece(path, k * piece, length);
    if (onBytes)
      void p.then(
        () => onBytes(length),
        () => undefined,
      );
    pieces.push(p);
  }
  const digests = await settleAll(pieces);
  return { sha256: combineChunks(digests), chunkBytes: piece };
}

/** Like Promise.all, but waits for every promise before it throws the first error (no thread left reading a file behind). */
async function settleAll<T>(promises: readonly Promise<T>[]): Promise<T[]> {
  const results = await Promise.allSettled(promises);
  const failed = results.find((r) => r.status === 'rejected');
  if (failed) throw (failed as PromiseRejectedResult).reason;
  return results.map((r) => (r as PromiseFulfilledResult<T>).value);
}

function mismatch(dir: string, file: ImageFile): AgentError {
  return new AgentError(
    'EIO',
    `image file ${file.path} in ${dir} does not match its manifest (size or sha256 differ): the checkpoint is corrupt`,
  );
}
