// One thread of the hashing pool (./hash-pool.ts): sha256 of whole files, one at a time, with
// synchronous 1 MiB reads (a worker has no event loop of anyone else's to keep free). A file is
// opened with O_NOFOLLOW, as everywhere an image is read: a symlink planted in an image is refused.

import { createHash } from 'node:crypto';
import { closeSync, constants, openSync, readSync } from 'node:fs';
import { parentPort } from 'node:worker_threads';

export interface HashRequest {
  readonly id: number;
  readonly path: string;
}
export type HashReply =
  { readonly id: number; readonly sha256: string } | { readonly id: number; readonly error: { message: string; code?: string } };

const READ_BYTES = 1024 * 1024;
const buffer = Buffer.allocUnsafe(READ_BYTES);

function sha256Sync(path: string): string {
  const fd = openSync(path, constants.O_RDONLY | constants.O_NOFOLLOW);
  try {
    const hash = createHash('sha256');
    for (;;) {
      const n = readSync(fd, buffer, 0, buffer.length, null);
      if (n === 0) return hash.digest('hex');
      hash.update(buffer.subarray(0, n));
    }
  } finally {
    closeSync(fd);
  }
}

parentPort?.on('message', (request: HashRequest) => {
  let reply: HashReply;
  try {
    reply = { id: request.id, sha256: sha256Sync(request.path) };
  } catch (err) {
    const e = err as NodeJS.ErrnoException;
    reply = { id: request.id, error: { message: e.message, code: e.code } };
  }
  parentPort!.postMessage(reply);
});
