// The archive format's pure rules: the exact tar length an export announces (X-Archive-Bytes) is
// the length tar-stream packs; which image paths are safe; the signature member's strict shape.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { badImagePath, parseManifest, parseSignature, tarBytes } from '../../src/archive/format.js';
import { goodMembers, imageFiles, manifestFor, newKey, packTar } from './craft.js';

test('tarBytes is the exact length of the packed stream, for files around block boundaries', async () => {
  const key = newKey();
  for (const sizes of [[0], [1], [511, 512, 513], [1024, 20480, 3]]) {
    const files = sizes.map((n, i) => ({ path: `tree-0/f${i}.img`, content: Buffer.alloc(n, i) }));
    const members = goodMembers(key, files, manifestFor(files));
    const packed = await packTar(members);
    const expected = tarBytes(members[1].content.length, members[2].content.length, manifestFor(files).files as never);
    assert.equal(packed.tar.length, expected, `sizes ${sizes.join(',')}`);
  }
  const unsigned = goodMembers(key).filter((m) => m.name !== 'signature.json');
  assert.equal(
    (await packTar(unsigned)).tar.length,
    tarBytes(unsigned[1].content.length, undefined, manifestFor(imageFiles()).files as never),
  );
});

test('image paths: relative, plain segments, short enough for a ustar name', () => {
  for (const ok of ['tree-0/pages-1.img', 'dump.log', 'tree-12/core-4242.img', 'a/b/c/d.e_f-g'])
    assert.equal(badImagePath(ok), undefined, ok);
  const cases: [string, RegExp][] = [
    ['/etc/passwd', /absolute/],
    ['../x', /climbs out/],
    ['tree-0/../../x', /climbs out/],
    ['tree-0//x', /empty or '\.' segment/],
    ['./x', /empty or '\.' segment/],
    ['tree-0/', /empty/],
    ['tree 0/x', /characters other than/],
    ['tree-0/x\u00e9', /characters other than/],
    ['manifest.json', /the manifest itself/],
    [`${'a'.repeat(60)}/${'b'.repeat(40)}`, /longer than 94 bytes/],
  ];
  for (const [path, why] of cases) assert.match(badImagePath(path) ?? 'accepted', why, path);
});

test('signature.json: exactly three fields, ed25519, lower-case hex of the right lengths', () => {
  const good = { algorithm: 'ed25519', publicKey: 'a'.repeat(64), signature: 'b'.repeat(128) };
  assert.deepEqual(parseSignature(Buffer.from(JSON.stringify(good))), good);
  const bad: [unknown, RegExp][] = [
    [{ ...good, extra: 1 }, /exactly algorithm, publicKey and signature/],
    [{ ...good, algorithm: 'rsa' }, /is not ed25519/],
    [{ ...good, publicKey: 'A'.repeat(64) }, /publicKey is not 32 bytes of lower-case hex/],
    [{ ...good, publicKey: 'a'.repeat(62) }, /publicKey is not 32 bytes/],
    [{ ...good, signature: 'b'.repeat(127) + 'g' }, /signature is not 64 bytes/],
    [[good], /not a JSON object/],
  ];
  for (const [value, why] of bad) assert.throws(() => parseSignature(Buffer.from(JSON.stringify(value))), why);
  assert.throws(() => parseSignature(Buffer.from('{"algorithm":')), /signature\.json is not JSON/);
});

test('a manifest file may carry chunkBytes (a chunked digest): a whole number of MiB from 1 MiB to 1 GiB, nothing else', () => {
  const files = [{ path: 'tree-0/pages-1.img', content: Buffer.alloc(10, 1) }];
  const withChunk = (chunkBytes: unknown) => {
    const m = manifestFor(files);
    (m.files as Record<string, unknown>[])[0].chunkBytes = chunkBytes;
    return Buffer.from(JSON.stringify(m));
  };
  assert.equal(parseManifest(withChunk(16 << 20)).files[0].chunkBytes, 16 << 20);
  assert.equal(parseManifest(Buffer.from(JSON.stringify(manifestFor(files)))).files[0].chunkBytes, undefined);
  for (const bad of [0, 4096, (1 << 20) + 1, 2 ** 31, '16777216', null, -(16 << 20)])
    assert.throws(() => parseManifest(withChunk(bad)), /invalid chunkBytes/, String(bad));
});
