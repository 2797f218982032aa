// Chunked digests (src/checkpoint/digest.ts), the checksums made from them (checksums.ts) and the
// page files followed while they grow (follow.ts): every way of computing a file's digest gives
// the same value, and a change to any byte, or to the recorded piece size, is refused.

import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { appendFileSync, mkdirSync, renameSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { CHUNK_BYTES, StreamingDigest, chunkBytesFor, combineChunks, isChunkBytes } from '../../src/checkpoint/digest.js';
import { describeFiles, verifyFiles } from '../../src/checkpoint/checksums.js';
import { ImageFollower } from '../../src/checkpoint/follow.js';
import { sha256Piece } from '../../src/checkpoint/hash-pool.js';
import { Lab } from '../helpers/lab.js';

const lab = new Lab('digest');
after(() => lab.cleanup());

const sha = (b: Buffer) => createHash('sha256').update(b).digest('hex');

/** Deterministic bytes that differ from piece to piece. */
function content(size: number, seed: number): Buffer {
  const b = Buffer.alloc(size);
  for (let i = 0; i + 4 <= size; i += 4096) b.writeUInt32LE((i / 4096 + seed * 7919) >>> 0, i);
  return b;
}

/** The chunked digest computed here, from the definition. */
function expected(b: Buffer): string {
  const chunk = chunkBytesFor(b.length);
  if (chunk === undefined) return sha(b);
  const digests: string[] = [];
  for (let off = 0; off < b.length; off += chunk) digests.push(sha(b.subarray(off, off + chunk)));
  return combineChunks(digests);
}

test('files up to 16 MiB keep a plain sha256; larger ones are chunked', () => {
  assert.equal(chunkBytesFor(CHUNK_BYTES), undefined);
  assert.equal(chunkBytesFor(CHUNK_BYTES + 1), CHUNK_BYTES);
  assert.ok(isChunkBytes(CHUNK_BYTES));
  for (const bad of [0, 1, 4096, (1 << 20) + 1, 2 ** 31, -CHUNK_BYTES, '16777216', 1.5 * (1 << 20)])
    assert.equal(isChunkBytes(bad), false, String(bad));
});

test('a stream read in odd-sized pieces gives the chunked digest; one changed byte changes it', () => {
  const b = content(2 * CHUNK_BYTES + 12345, 1);
  const stream = new StreamingDigest(CHUNK_BYTES);
  for (let off = 0; off < b.length; off += 999_983) stream.update(b.subarray(off, off + 999_983));
  const whole = stream.digest();
  assert.equal(whole, expected(b));
  const plain = new StreamingDigest(undefined);
  plain.update(b);
  assert.equal(plain.digest(), sha(b), 'without chunkBytes: the plain sha256');
  b[CHUNK_BYTES + 5] ^= 1;
  const changed = new StreamingDigest(CHUNK_BYTES);
  changed.update(b);
  assert.notEqual(changed.digest(), whole);
});

test('a piece is the sha256 of exactly its bytes; a piece past the end fails with EIO', async () => {
  const dir = lab.tempDir('piece');
  const b = content(3 << 20, 2);
  writeFileSync(join(dir, 'f'), b);
  assert.equal(await sha256Piece(join(dir, 'f'), 1 << 20, 1 << 20), sha(b.subarray(1 << 20, 2 << 20)));
  await assert.rejects(sha256Piece(join(dir, 'f'), 2 << 20, 2 << 20), { code: 'EIO' });
});

test('describeFiles records the chunked digest of a large file, verifyFiles checks every byte and the piece size', async () => {
  const dir = lab.tempDir('describe');
  const big = content(CHUNK_BYTES * 2 + 1, 3);
  const small = content(5000, 4);
  writeFileSync(join(dir, 'big'), big);
  writeFileSync(join(dir, 'small'), small);
  let told = 0;
  const files = await describeFiles(dir, { onBytes: (n) => (told += n) });
  assert.deepEqual(files, [
    { path: 'big', size: big.length, sha256: expected(big), chunkBytes: CHUNK_BYTES },
    { path: 'small', size: small.length, sha256: sha(small) },
  ]);
  assert.equal(told, big.length + small.length, 'every byte is told once');
  await verifyFiles(dir, files);
  await assert.rejects(
    verifyFiles(dir, [{ ...files[0], chunkBytes: 1 << 20 }]),
    /does not match its manifest/,
    'another piece size is another digest',
  );
  await assert.rejects(verifyFiles(dir, [{ ...files[0], chunkBytes: 7 }]), /does not match its manifest/);
  big[big.length - 1] ^= 0xff; // the last, one-byte piece
  writeFileSync(join(dir, 'big'), big);
  await assert.rejects(verifyFiles(dir, files), /big .* does not match its manifest/);
});

test('a page file followed as it grows gets the digest of its final bytes; a replaced one is hashed afresh', async () => {
  const root = lab.tempDir('follow');
  const tree = join(root, 'tree-0');
  mkdirSync(tree);
  const grown = content(3 * CHUNK_BYTES + 777, 5);
  const replaced = content(2 * CHUNK_BYTES + 3, 6);
  const follower = new ImageFollower(root);
  follower.follow(tree);
  const pages = join(tree, 'pages-1.img');
  const other = join(tree, 'pages-2.img');
  writeFileSync(other, content(2 * CHUNK_BYTES, 7)); // to be replaced by another inode
  // Appends of 5 MiB, each awaited past a look of the follower (it looks every 20 ms).
  for (let off = 0; off < grown.length; off += 5 << 20) {
    appendFileSync(pages, grown.subarray(off, off + (5 << 20)));
    await new Promise((resolve) => setTimeout(resolve, 30));
  }
  writeFileSync(join(tree, 'new'), replaced);
  renameSync(join(tree, 'new'), other);
  writeFileSync(join(tree, 'core-1.img'), 'core');
  const followed = follower.stop();
  assert.equal(followed.get('tree-0/pages-1.img')?.pieces.length, 3, 'the three whole pieces were started while it grew');
  const files = await describeFiles(root, { followed });
  assert.deepEqual(files, [
    { path: 'tree-0/core-1.img', size: 4, sha256: sha(Buffer.from('core')) },
    { path: 'tree-0/pages-1.img', size: grown.length, sha256: expected(grown), chunkBytes: CHUNK_BYTES },
    { path: 'tree-0/pages-2.img', size: replaced.length, sha256: expected(replaced), chunkBytes: CHUNK_BYTES },
  ]);
  await verifyFiles(root, files);
});
