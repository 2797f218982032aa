// Hostile archives against a real agent: each kind of bad input (path traversal, absolute paths,
// links, devices, duplicates, strays, sizes beyond the manifest, a decompression bomb, truncation,
// checksum and signature mismatches, an unknown format version, an unsigned archive, over the
// limit) is refused with a 4xx naming the entry and the cause, and leaves nothing behind. Then a
// fuzz run: 600 generated bad archives (fast-check, fixed seed, so each run tries the same ones),
// after which the agent still serves, no partial directory remains, and the good image imported
// first has not changed. No CRIU is involved: the archives are of a synthetic checkpoint.

import { test, describe, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { mkdirSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import fc from 'fast-check';
import { Lab } from '../helpers/lab.js';
import { api, startAgent, type Agent, type ApiResponse } from '../daemon/agent.js';
import {
  archiveOf,
  compress,
  goodMembers,
  imageFiles,
  manifestFor,
  newKey,
  packTar,
  signatureFor,
  type Member,
  type TestKey,
} from './craft.js';

const lab = new Lab('archive-hostile');
let agent: Agent;
let key: TestKey;
let goodId: string;
let goodDigest: string;

const TYPE = { 'Content-Type': 'application/x-agentd-archive' };

function post(body: Buffer, query = ''): Promise<ApiResponse> {
  return api(agent.socket, 'POST', `/v1/checkpoints/import${query}`, { body, headers: TYPE });
}

/** Every entry of the images directory with the sha256 of every file of the good image. */
function imagesState(): string {
  const hash = createHash('sha256');
  for (const name of readdirSync(agent.imagesDir).sort()) {
    hash.update(`entry ${name}\n`);
    if (name !== goodId) continue;
    const walk = (dir: string, rel: string) => {
      for (const e of readdirSync(dir, { withFileTypes: true }).sort((x, y) => x.name.localeCompare(y.name))) {
        const path = join(dir, e.name);
        if (e.isDirectory()) walk(path, `${rel}${e.name}/`);
        else hash.update(`${rel}${e.name} ${createHash('sha256').update(readFileSync(path)).digest('hex')}\n`);
      }
    };
    walk(join(agent.imagesDir, name), '');
  }
  return hash.digest('hex');
}

/** A refusal: the status, the code and the message, and nothing new under the images directory. */
async function refused(body: Buffer, status: number, code: string, message: RegExp, query = ''): Promise<void> {
  const res = await post(body, query);
  assert.equal(res.status, status, res.text);
  assert.equal(res.body?.error?.code, code, res.text);
  assert.match(res.body.error.message, message);
  assert.equal(imagesState(), goodDigest, 'the images directory is as it was: no partial directory, the good image unchanged');
}

const replace = (members: Member[], name: string, change: Partial<Member>): Member[] =>
  members.map((m) => (m.name === name ? { ...m, ...change } : m));

describe('hostile archives', () => {
  before(async () => {
    key = newKey();
    const dir = lab.tempDir('agent');
    const trusted = lab.tempDir('trusted');
    writeFileSync(join(trusted, 'test.pem'), key.pem, { mode: 0o644 });
    // What an agent that died mid-import leaves: the next start removes it.
    mkdirSync(join(dir, 'images', '.importing-0123456789ab', 'tree-0'), { recursive: true, mode: 0o700 });
    writeFileSync(join(dir, 'images', '.importing-0123456789ab', 'tree-0', 'pages-1.img'), 'half an image');
    agent = await startAgent(lab, {
      dir,
      args: ['--key', join(dir, 'signing-key'), '--trusted-keys', trusted, '--max-import-bytes', '1M'],
    });
    const res = await post(await archiveOf(goodMembers(key)));
    assert.equal(res.status, 201, res.text);
    goodId = res.body.id;
    goodDigest = imagesState();
  });

  after(async () => {
    await agent?.stop();
    await lab.cleanup();
  });

  test('a .importing-* directory an agent left when it died mid-import is removed at the next start', () => {
    assert.deepEqual(
      readdirSync(agent.imagesDir).filter((n) => n.startsWith('.')),
      [],
    );
    assert.match(agent.log(), /removed a temporary image directory an interrupted checkpoint left dir=\S+\/\.importing-0123456789ab/);
  });

  test('a good archive of a synthetic checkpoint imports (201) with its signer named', async () => {
    const manifest = JSON.parse(readFileSync(join(agent.imagesDir, goodId, 'manifest.json'), 'utf8'));
    assert.equal(manifest.imported.from, '20261201T000000Z-abcdef');
    assert.match(manifest.imported.signer, /^sha256:[0-9a-f]{64}$/);
    assert.deepEqual(manifest.files, manifestFor(imageFiles()).files);
  });

  test('path traversal and absolute paths, in a member name or in the manifest', async () => {
    const good = goodMembers(key);
    await refused(
      await archiveOf([...good, { name: 'files/../../etc/cron.d/x', content: Buffer.from('x') }]),
      400,
      'EINVAL',
      /entry "files\/\.\.\/\.\.\/etc\/cron\.d\/x" is a path that climbs out with '\.\.'/,
    );
    await refused(
      await archiveOf([...good, { name: '/etc/passwd', content: Buffer.from('x') }]),
      400,
      'EINVAL',
      /entry "\/etc\/passwd" is an absolute path/,
    );
    const files = [...imageFiles(), { path: '../../escape.img', content: Buffer.from('x') }];
    await refused(
      await archiveOf(goodMembers(key, files)),
      400,
      'EINVAL',
      /manifest file "\.\.\/\.\.\/escape\.img" is a path that climbs out with '\.\.'/,
    );
    const absolute = [...imageFiles(), { path: '/etc/shadow', content: Buffer.from('x') }];
    await refused(await archiveOf(goodMembers(key, absolute)), 400, 'EINVAL', /manifest file "\/etc\/shadow" is an absolute path/);
  });

  test('symbolic links, hard links, devices, FIFOs and directories are refused by name', async () => {
    const good = goodMembers(key);
    const cases: [Member['type'], RegExp][] = [
      ['symlink', /entry "files\/tree-0\/pstree\.img" is a symbolic link: only regular files are allowed/],
      ['link', /entry "files\/tree-0\/pstree\.img" is a hard link: only regular files are allowed/],
      ['character-device', /entry "files\/tree-0\/pstree\.img" is a character device/],
      ['block-device', /entry "files\/tree-0\/pstree\.img" is a block device/],
      ['fifo', /entry "files\/tree-0\/pstree\.img" is a FIFO/],
      ['directory', /entry "files\/tree-0\/pstree\.img\/?" is a directory/],
    ];
    for (const [type, message] of cases) {
      const members = replace(good, 'files/tree-0/pstree.img', {
        type,
        linkname: type === 'symlink' || type === 'link' ? '/etc/shadow' : undefined,
      });
      await refused(await archiveOf(members), 400, 'EINVAL', message);
    }
  });

  test('duplicate entries, files not in the manifest, sizes beyond the manifest, missing files', async () => {
    const good = goodMembers(key);
    await refused(await archiveOf([...good, good[4]]), 400, 'EINVAL', /entry "files\/tree-0\/pages-1\.img" appears twice/);
    await refused(await archiveOf([...good.slice(0, 3), good[1], ...good.slice(3)]), 400, 'EINVAL', /entry "manifest\.json" appears twice/);
    await refused(
      await archiveOf([...good, { name: 'files/tree-0/extra.img', content: Buffer.from('x') }]),
      400,
      'EINVAL',
      /entry "files\/tree-0\/extra\.img" is not in the manifest/,
    );
    const bigger = replace(good, 'files/tree-0/core-4242.img', { content: Buffer.alloc(5000, 1) });
    await refused(
      await archiveOf(bigger),
      400,
      'EINVAL',
      /entry "files\/tree-0\/core-4242\.img" is 5000 bytes, its manifest lists 1000 \(larger than the manifest allows\)/,
    );
    await refused(
      await archiveOf(good.slice(0, -1)),
      400,
      'EINVAL',
      /the archive ends without 1 of the manifest's files \(files\/tree-0\/dump\.log\): truncated\?/,
    );
  });

  test('a decompression bomb: inflating past what the manifest accounts for, before or after the manifest', async () => {
    // 64 MiB of zero blocks after the last member: the tar reader skips them, the bound does not.
    await refused(
      await archiveOf(goodMembers(key), Buffer.alloc(64 << 20)),
      400,
      'EINVAL',
      /it inflates past the \d+ bytes its manifest accounts for \(a decompression bomb\?\)/,
    );
    const hugeManifest = [goodMembers(key)[0], { name: 'manifest.json', content: Buffer.alloc(32 << 20, 0x20) }];
    await refused(await archiveOf(hugeManifest), 400, 'EINVAL', /inflates past|manifest\.json is larger than/);
  });

  test('truncated archives, at any depth, and bytes that are no archive at all', async () => {
    const whole = await archiveOf(goodMembers(key));
    for (const at of [1, 10, Math.floor(whole.length / 2), whole.length - 1]) {
      await refused(
        whole.subarray(0, at),
        400,
        'EINVAL',
        /the compressed stream is corrupt or truncated at entry|the archive is truncated/,
      );
    }
    await refused(Buffer.from('this is not an archive, just text'), 400, 'EINVAL', /the compressed stream is corrupt or truncated/);
    await refused(Buffer.alloc(0), 400, 'EINVAL', /corrupt or truncated|the archive is empty/);
  });

  test('checksum and signature mismatches; an unknown key; an unsigned archive (403 unless root passes trust=true)', async () => {
    const good = goodMembers(key);
    const altered = replace(good, 'files/tree-0/pages-1.img', { content: Buffer.alloc(20480, 9) });
    await refused(await archiveOf(altered), 400, 'EINVAL', /files\/tree-0\/pages-1\.img does not match its sha256 in the manifest/);
    const manifest = manifestFor(imageFiles());
    const tampered = replace(good, 'manifest.json', {
      content: Buffer.from(JSON.stringify({ ...manifest, cgroup: 'elsewhere' }, null, 2) + '\n'),
    });
    await refused(
      await archiveOf(tampered),
      400,
      'EINVAL',
      /signature\.json does not verify over manifest\.json with the key it names \(sha256:[0-9a-f]{64}\): the archive was altered/,
    );
    // ...and --trust does not change that.
    await refused(await archiveOf(tampered), 400, 'EINVAL', /does not verify/, '?trust=true');
    const stranger = newKey();
    const foreign = replace(good, 'signature.json', { content: signatureFor(good[1].content, stranger) });
    await refused(
      await archiveOf(foreign),
      403,
      'EACCES',
      /it is signed by sha256:[0-9a-f]{64}, a key not in \S+; put the exporting agent's key there/,
    );
    const unsigned = good.filter((m) => m.name !== 'signature.json');
    await refused(await archiveOf(unsigned), 403, 'EACCES', /archive refused: it is unsigned; as root, pass --trust to import it anyway/);
    // The test runs as root: with trust=true both come in, and are removed again.
    for (const members of [foreign, unsigned]) {
      const res = await post(await archiveOf(members), '?trust=true');
      assert.equal(res.status, 201, res.text);
      assert.equal((await api(agent.socket, 'DELETE', `/v1/checkpoints/${res.body.id}`)).status, 200);
    }
    assert.equal(imagesState(), goodDigest);
  });

  test('an unknown format version, a missing version member, and a wrong order', async () => {
    const good = goodMembers(key);
    await refused(
      await archiveOf(replace(good, 'agentd-archive', { content: Buffer.from('agentd-archive 2\n') })),
      400,
      'EINVAL',
      /format version "2" is not one this agent reads \(agentd-archive 1\)/,
    );
    await refused(
      await archiveOf(good.slice(1)),
      400,
      'EINVAL',
      /the first entry must be agentd-archive, found "manifest\.json": not an agentd archive/,
    );
    await refused(
      await archiveOf([good[0], good[2], good[1], ...good.slice(3)]),
      400,
      'EINVAL',
      /the second entry must be manifest\.json, found "signature\.json"/,
    );
  });

  test('over --max-import-bytes (413, declared or not), a full disk (507), a wrong content type (415)', async () => {
    // 2 MiB that no compressor shrinks, the same every run: sha256 in counter mode.
    const padding = Buffer.concat(Array.from({ length: (2 << 20) / 32 }, (_, i) => createHash('sha256').update(String(i)).digest()));
    const big = await archiveOf(goodMembers(key, [...imageFiles(), { path: 'tree-0/noise.img', content: padding }]));
    assert.ok(big.length > 1 << 20);
    await refused(big, 413, 'EINVAL', /archive refused: it is larger than the import limit of 1048576 bytes \(agentd --max-import-bytes\)/);
    const chunked = await api(agent.socket, 'POST', '/v1/checkpoints/import', {
      headers: TYPE,
      chunks: Array.from({ length: Math.ceil(big.length / 65536) }, (_, i) => big.subarray(i * 65536, (i + 1) * 65536)),
    });
    assert.equal(chunked.status, 413, chunked.text);
    assert.match(chunked.body.error.message, /larger than the import limit of 1048576 bytes/);
    assert.equal(imagesState(), goodDigest);

    const files = imageFiles();
    const manifest = manifestFor(files);
    (manifest.files as { size: number }[])[1].size = 2 ** 50;
    await refused(await archiveOf(goodMembers(key, files, manifest)), 507, 'ENOSPC', /needs \d+ bytes and \S+ has \d+ free/);

    const res = await api(agent.socket, 'POST', '/v1/checkpoints/import', {
      body: await archiveOf(goodMembers(key)),
      headers: { 'Content-Type': 'application/json' },
    });
    assert.equal(res.status, 415, res.text);
    assert.equal(imagesState(), goodDigest);
  });

  test('fuzz: 600 generated bad archives are each refused with a 4xx; the agent keeps serving, nothing is left, the good image is unchanged', async () => {
    const good = goodMembers(key);
    const packed = await packTar(good);
    const hostileName = fc.oneof(
      fc.constantFrom(
        '/etc/passwd',
        '../x',
        'files/../x',
        'files/tree-0/../../x',
        'files//tree-0/core-4242.img',
        'files/./tree-0/pstree.img',
        'files/',
        'manifest.json',
        'agentd-archive',
        'signature.json',
        './agentd-archive',
        'files/tree-0',
        'files/tree-0/pstree.img/x',
      ),
      fc.stringMatching(/^[a-z./-]{1,40}$/),
    );
    type Mutation = { kind: string; apply: () => Promise<Buffer> };
    const withMembers = (kind: string, make: () => Member[] | undefined) => ({ kind, apply: async () => archiveOf(make() ?? good) });
    const mutation: fc.Arbitrary<Mutation> = fc.oneof(
      fc
        .tuple(fc.nat(good.length - 1), hostileName)
        .filter(([i, name]) => good[i].name !== name)
        .map(([i, name]) => withMembers('rename', () => good.map((m, j) => (j === i ? { ...m, name } : m)))),
      fc
        .tuple(
          fc.integer({ min: 3, max: good.length - 1 }),
          fc.constantFrom<Member['type']>('symlink', 'link', 'character-device', 'block-device', 'directory', 'fifo'),
        )
        .map(([i, type]) => withMembers('type', () => good.map((m, j) => (j === i ? { ...m, type, linkname: '/etc/shadow' } : m)))),
      fc
        .tuple(fc.nat(good.length - 1), fc.nat(good.length))
        .map(([i, at]) => withMembers('duplicate', () => [...good.slice(0, at), good[i], ...good.slice(at)])),
      fc
        .integer({ min: 0, max: good.length - 1 })
        .filter((i) => i !== 2)
        .map((i) => withMembers('drop', () => good.filter((_, j) => j !== i))),
      fc.tuple(fc.integer({ min: 3, max: good.length - 1 }), fc.uint8Array({ minLength: 0, maxLength: 3000 })).map(([i, bytes]) =>
        withMembers('content', () =>
          good.map((m, j) => {
            if (j !== i) return m;
            const content = Buffer.from(bytes);
            return { ...m, content: content.equals(m.content) ? Buffer.concat([content, Buffer.from([1])]) : content };
          }),
        ),
      ),
      fc
        .tuple(fc.nat(2), fc.nat(2))
        .filter(([x, y]) => x !== y)
        .map(([x, y]) =>
          withMembers('swap', () => {
            const out = [...good];
            [out[x], out[y]] = [out[y], out[x]];
            return out;
          }),
        ),
      fc.tuple(fc.nat(packed.regions.length - 1), fc.nat(147), fc.integer({ min: 1, max: 255 })).map(([m, at, xor]) => ({
        kind: 'header-byte',
        apply: async () => {
          const t = Buffer.from(packed.tar);
          t[packed.regions[m].header + at] ^= xor;
          return compress(t);
        },
      })),
      fc.tuple(fc.nat(packed.regions.length - 1), fc.nat(1 << 20), fc.integer({ min: 1, max: 255 })).map(([m, at, xor]) => ({
        kind: 'data-byte',
        apply: async () => {
          const t = Buffer.from(packed.tar);
          const r = packed.regions[m];
          t[r.data + (at % r.size)] ^= xor;
          return compress(t);
        },
      })),
      fc.double({ min: 0, max: 1, noNaN: true, maxExcluded: true }).map((f) => ({
        kind: 'truncate',
        apply: async () => {
          const whole = compress(packed.tar);
          return whole.subarray(0, Math.floor(f * whole.length));
        },
      })),
      fc.string({ maxLength: 30 }).map((cgroup) => ({
        kind: 'manifest-changed',
        apply: async () => {
          const manifest = JSON.parse(good[1].content.toString());
          return archiveOf(replace(good, 'manifest.json', { content: Buffer.from(JSON.stringify({ ...manifest, cgroup: `x${cgroup}` })) }));
        },
      })),
    );
    const seen: Record<string, number> = {};
    await fc.assert(
      fc.asyncProperty(mutation, async (m) => {
        seen[m.kind] = (seen[m.kind] ?? 0) + 1;
        const res = await post(await m.apply());
        assert.ok(res.status >= 400 && res.status < 500, `${m.kind}: expected a 4xx, got ${res.status} ${res.text}`);
        assert.match(res.body?.error?.message ?? '', /archive refused|only root/, `${m.kind}: ${res.text}`);
        assert.deepEqual(
          readdirSync(agent.imagesDir).filter((n) => n.startsWith('.')),
          [],
          `${m.kind}: no partial directory`,
        );
      }),
      { numRuns: 600, seed: 20261201, endOnFailure: true },
    );
    const health = await api(agent.socket, 'GET', '/v1/health');
    assert.equal(health.status, 200);
    assert.equal(imagesState(), goodDigest, 'the good image and the directory are as they were');
    assert.ok(Object.keys(seen).length >= 9, `every kind of mutation was tried: ${JSON.stringify(seen)}`);
  });
});
