// Building archives by hand for the tests, good and bad: a synthetic checkpoint (a manifest of a
// few small image files, no CRIU involved), its members as a list that a test may change freely
// (names, types, contents, order), packed with tar-stream and compressed as agentd does. The
// offsets of every header and data region are kept, so that a test can flip a byte exactly where
// it means to.

import { createHash, generateKeyPairSync, sign, type KeyObject } from 'node:crypto';
import { constants, brotliCompressSync } from 'node:zlib';
import tar from 'tar-stream';

export interface Member {
  readonly name: string;
  readonly content: Buffer;
  /** tar-stream's type; default 'file'. */
  readonly type?: 'file' | 'symlink' | 'link' | 'character-device' | 'block-device' | 'directory' | 'fifo';
  readonly linkname?: string;
}

export interface TestKey {
  readonly privateKey: KeyObject;
  readonly pem: string;
  readonly raw: string;
}

export function newKey(): TestKey {
  const { privateKey, publicKey } = generateKeyPairSync('ed25519');
  const jwk = publicKey.export({ format: 'jwk' });
  return {
    privateKey,
    pem: publicKey.export({ format: 'pem', type: 'spki' }).toString(),
    raw: Buffer.from(jwk.x!, 'base64url').toString('hex'),
  };
}

const sha256 = (b: Buffer) => createHash('sha256').update(b).digest('hex');

/** Image files of a synthetic checkpoint: a few sizes, around block boundaries too. */
export function imageFiles(seed = 1): { path: string; content: Buffer }[] {
  const bytes = (n: number, k: number) => Buffer.from(Array.from({ length: n }, (_, i) => (i * k + seed) & 0xff));
  return [
    { path: 'tree-0/core-4242.img', content: bytes(1000, 7) },
    { path: 'tree-0/pages-1.img', content: bytes(20480, 13) },
    { path: 'tree-0/pstree.img', content: bytes(512, 3) },
    { path: 'tree-0/dump.log', content: Buffer.from('(00.000001) Dumping finished successfully\n') },
  ];
}

/** A manifest for `files`, with every field a restore reads. */
export function manifestFor(files: readonly { path: string; content: Buffer }[], id = '20261201T000000Z-abcdef'): Record<string, unknown> {
  return {
    formatVersion: 1,
    id,
    cgroup: 'agentd-test-archive-synthetic',
    hierarchy: 'v2',
    cgroupDir: '/sys/fs/cgroup/unified/agentd-test-archive-synthetic',
    createdAt: '2026-12-01T00:00:00.000Z',
    kernel: '6.18.0',
    criuVersion: '4.2.1',
    options: { after: 'killed' },
    priorState: 'THAWED',
    trees: [{ index: 0, root: 4242, processes: [{ pid: 4242, ppid: 1, command: 'synthetic' }] }],
    files: files.map((f) => ({ path: f.path, size: f.content.length, sha256: sha256(f.content) })),
    criuStats: [],
    timings: { freezeMs: 1, frozenWindowMs: 2, dumpMs: 3, totalMs: 4 },
  };
}

export function signatureFor(manifestBytes: Buffer, key: TestKey): Buffer {
  return Buffer.from(
    JSON.stringify({ algorithm: 'ed25519', publicKey: key.raw, signature: sign(null, manifestBytes, key.privateKey).toString('hex') }),
  );
}

/** The members of a good archive of `files`, signed by `key`. */
export function goodMembers(key: TestKey, files = imageFiles(), manifest = manifestFor(files)): Member[] {
  const manifestBytes = Buffer.from(JSON.stringify(manifest, null, 2) + '\n');
  return [
    { name: 'agentd-archive', content: Buffer.from('agentd-archive 1\n') },
    { name: 'manifest.json', content: manifestBytes },
    { name: 'signature.json', content: signatureFor(manifestBytes, key) },
    ...files.map((f) => ({ name: `files/${f.path}`, content: f.content })),
  ];
}

export interface Packed {
  readonly tar: Buffer;
  /** Per member: where its header and its data lie in `tar`. */
  readonly regions: readonly { header: number; data: number; size: number }[];
}

/** The tar stream of the members (tar-stream's pack, as agentd writes them). */
export async function packTar(members: readonly Member[], extra?: Buffer): Promise<Packed> {
  const pack = tar.pack();
  const chunks: Buffer[] = [];
  pack.on('data', (c: unknown) => void chunks.push(c as Buffer));
  const ended = new Promise<void>((resolve, reject) => {
    pack.on('end', resolve);
    pack.on('error', reject);
  });
  const regions: { header: number; data: number; size: number }[] = [];
  let offset = 0;
  for (const m of members) {
    const type = m.type ?? 'file';
    const carries = type === 'file';
    const size = carries ? m.content.length : 0;
    const header = {
      name: m.name,
      type,
      mode: 0o600,
      mtime: new Date(0),
      ...(m.linkname ? { linkname: m.linkname } : {}),
      ...(type.endsWith('device') ? { devmajor: 1, devminor: 3 } : {}),
    };
    await new Promise<void>((resolve, reject) =>
      pack.entry(header, carries ? m.content : Buffer.alloc(0), (err) => (err ? reject(err) : resolve())),
    );
    regions.push({ header: offset, data: offset + 512, size });
    offset += 512 + Math.ceil(size / 512) * 512;
  }
  pack.finalize();
  await ended;
  const body = Buffer.concat(chunks);
  return { tar: extra ? Buffer.concat([body, extra]) : body, regions };
}

export function compress(tarBytes: Buffer): Buffer {
  return brotliCompressSync(tarBytes, { params: { [constants.BROTLI_PARAM_QUALITY]: 1 } });
}

export async function archiveOf(members: readonly Member[], extra?: Buffer): Promise<Buffer> {
  return compress((await packTar(members, extra)).tar);
}
