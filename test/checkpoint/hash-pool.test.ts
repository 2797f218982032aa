// The hashing threads (src/checkpoint/hash-pool.ts): the same digests as a hash in this thread,
// many files at once (small ones several to a job), each file's own error even inside a job, and no
// symlink followed.

import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { symlinkSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { sha256Files } from '../../src/checkpoint/hash-pool.js';
import { Lab } from '../helpers/lab.js';

const lab = new Lab('hash-pool');
after(() => lab.cleanup());

test('digests match node:crypto for many files of many sizes, each promise with its own file', async () => {
  const dir = lab.tempDir('files');
  const sizes = [0, 1, 4096, (1 << 20) - 1, 1 << 20, (3 << 20) + 17, 12345];
  const paths = sizes.map((size, i) => {
    const path = join(dir, `f${i}`);
    writeFileSync(path, Buffer.alloc(size, i + 1));
    return path;
  });
  const digests = await Promise.all(sha256Files(paths.map((path, i) => ({ path, size: sizes[i] }))));
  assert.deepEqual(
    digests,
    sizes.map((size, i) =>
      createHash('sha256')
        .update(Buffer.alloc(size, i + 1))
        .digest('hex'),
    ),
  );
});

test('a missing file and a symlink fail on their own; the others still hash', async () => {
  const dir = lab.tempDir('errors');
  writeFileSync(join(dir, 'real'), 'abc');
  symlinkSync(join(dir, 'real'), join(dir, 'link'));
  // Three small files: one job for one thread, each settled on its own.
  const [missing, link, real] = await Promise.allSettled(
    sha256Files(['missing', 'link', 'real'].map((name) => ({ path: join(dir, name), size: 3 }))),
  );
  assert.equal(missing.status, 'rejected');
  assert.equal((missing as PromiseRejectedResult).reason.code, 'ENOENT');
  assert.equal(link.status, 'rejected');
  assert.equal((link as PromiseRejectedResult).reason.code, 'ELOOP', 'O_NOFOLLOW: a planted symlink is refused');
  assert.deepEqual(real, { status: 'fulfilled', value: createHash('sha256').update('abc').digest('hex') });
});

test('a file that grew past the size it was packed by is still hashed whole', async () => {
  const dir = lab.tempDir('grown');
  const path = join(dir, 'grown');
  writeFileSync(path, Buffer.alloc(5 << 20, 9));
  const [digest] = await Promise.all(sha256Files([{ path, size: 10 }]));
  assert.equal(
    digest,
    createHash('sha256')
      .update(Buffer.alloc(5 << 20, 9))
      .digest('hex'),
  );
});
