// One thread of the hashing pool (./hash-pool.ts): sha256 of whole files or of pieces of one
// (./digest.ts), one job (a list of them) at a time, with synchronous 1 MiB reads (a worker has no event loop of
// anyone else's to keep free). A file is opened with O_NOFOLLOW, as everywhere an image is read: a
// symlink planted in an image is refused.

import { createHash } from 'node:crypto';
import { closeSync, constants, openSync, readlinkSync, readSync } from 'node:fs';
import { setPriority } from 'node:os';
import { parentPort } from 'node:worker_threads';

/** One file to hash: the whole of it, or with offset and length a piece, all of which must be there. */
export interface HashItem {
  readonly path: string;
  readonly offset?: number;
  readonly length?: number;
}

export interface HashRequest {
  readonly id: number;
  readonly items: readonly HashItem[];
  /** Hash at the lowest CPU priority (nice 19): pieces hashed while CRIU dumps a frozen workload. */
  readonly background?: boolean;
}
/** One result per item, in order: its digest, or why it could not be read. */
export type HashResult = { readonly sha256: string } | { readonly error: { message: string; code?: string } };
export interface HashReply {
  readonly id: number;
  readonly results: readonly HashResult[];
}

const READ_BYTES = 1024 * 1024;
const buffer = Buffer.allocUnsafe(READ_BYTES);

function sha256Sync(request: HashItem): string {
  const fd = openSync(request.path, constants.O_RDONLY | constants.O_NOFOLLOW);
  try {
    const hash = createHash('sha256');
    if (request.length === undefined) {
      for (;;) {
        const n = readSync(fd, buffer, 0, buffer.length, null);
        if (n === 0) return hash.digest('hex');
        hash.update(buffer.subarray(0, n));
      }
    }
    let position = request.offset ?? 0;
    let left = request.length;
    while (left > 0) {
      const n = readSync(fd, buffer, 0, Math.min(buffer.length, left), position);
      if (n === 0) {
        throw Object.assign(new Error(`${request.path} ends at byte ${position}, before the piece it was to hash ends`), { code: 'EIO' });
      }
      hash.update(buffer.subarray(0, n));
      position += n;
      left -= n;
    }
    return hash.digest('hex');
  } finally {
    closeSync(fd);
  }
}

// This thread's own id: setpriority(2) given a thread id sets that thread's nice value only (Linux
// keeps it per thread), so a background piece slows nobody but this thread. None known: no change.
const threadId = (() => {
  try {
    return Number(readlinkSync('/proc/thread-self').split('/').pop()) || undefined;
  } catch {
    return undefined;
  }
})();
let nice = 0;

function niceFor(request: HashRequest): void {
  const wanted = request.background ? 19 : 0;
  if (threadId === undefined || wanted === nice) return;
  try {
    setPriority(threadId, wanted);
    nice = wanted;
  } catch {
    // going back from 19 needs CAP_SYS_NICE (agentd runs as root); without it the thread stays low
  }
}

parentPort?.on('message', (request: HashRequest) => {
  niceFor(request);
  const results = request.items.map((item): HashResult => {
    try {
      return { sha256: sha256Sync(item) };
    } catch (err) {
      const e = err as NodeJS.ErrnoException;
      return { error: { message: e.message, code: e.code } };
    }
  });
  parentPort!.postMessage({ id: request.id, results } satisfies HashReply);
});
