// Bad input: at least 1000 generated requests over agentd's socket (paths with `..`, NUL bytes, very
// long names, symlinks, wrong types, unknown fields, huge bodies, truncated JSON, bad methods, bad
// ids, junk query strings). Every one must get a 4xx with a JSON error message, agentd must keep
// serving, and no cgroup may change: real test cgroups (running and frozen, v1 and v2) are named in
// many of the requests, and their kernel state, processes and lock records are compared before and
// after. The generator is a seeded PRNG: FAULT_SEED=<seed> replays a failing run.

import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, mkdirSync, readdirSync, rmdirSync, symlinkSync, writeFileSync } from 'node:fs';
import { isAbsolute, join } from 'node:path';
import { Agent, rawRequest, type AgentDirs } from './agent.js';
import { waitUntil } from '../helpers/lab.js';
import {
  auditImages,
  counterValue,
  flockFree,
  kernelState,
  lockRecord,
  prng,
  seedFromEnv,
  setKernel,
  startWorkload,
  verifyImage,
  type Workload,
} from './checks.js';
import { FaultSuite } from './suite.js';

const suite = new FaultSuite('faults-input');
const { lab, figures, hierarchies } = suite;
const sentinelDirs: string[] = [];
// A request that got through could have made a cgroup inside a sentinel (mkdir in cgroupfs):
// remove such strays, or the lab could not remove the sentinel.
suite.onCleanup(() => {
  for (const dir of sentinelDirs) {
    for (const entry of readdirSync(dir, { withFileTypes: true })) if (entry.isDirectory()) rmdirSync(join(dir, entry.name));
  }
});
const REQUESTS = 1200;
const ROUTES = [
  '/v1',
  '/v1/health',
  '/v1/host',
  '/v1/metrics',
  '/v1/cgroups/state',
  '/v1/cgroups/freeze',
  '/v1/cgroups/thaw',
  '/v1/checkpoints',
];

interface Generated {
  readonly kind: string;
  readonly description: string;
  readonly bytes: Buffer;
}

type Random = () => number;
const pick = <T>(random: Random, items: readonly T[]): T => items[Math.floor(random() * items.length)];
const int = (random: Random, min: number, max: number): number => min + Math.floor(random() * (max - min + 1));

function httpBytes(method: string, target: string, body?: string | Buffer, headers: Record<string, string> = {}): Buffer {
  const payload = body === undefined ? Buffer.alloc(0) : Buffer.isBuffer(body) ? body : Buffer.from(body, 'utf8');
  const lines = [`${method} ${target} HTTP/1.1`, 'Host: agentd', 'Connection: close'];
  const all: Record<string, string> = {
    ...(body !== undefined ? { 'Content-Type': 'application/json', 'Content-Length': String(payload.length) } : {}),
    ...headers,
  };
  for (const [k, v] of Object.entries(all)) lines.push(`${k}: ${v}`);
  return Buffer.concat([Buffer.from(lines.join('\r\n') + '\r\n\r\n', 'latin1'), payload]);
}

/** encodeURIComponent, except that a lone surrogate (not encodable) is sent as its raw WTF-8 bytes. */
function encodeLoosely(text: string): string {
  try {
    return encodeURIComponent(text);
  } catch {
    return text
      .split(/([\ud800-\udfff])/)
      .map((part) => (/^[\ud800-\udfff]$/.test(part) ? '%ED%A0%80' : encodeURIComponent(part)))
      .join('');
  }
}

function randomName(random: Random, length: number): string {
  const alphabet = 'abcdefghijklmnopqrstuvwxyz0123456789-_.';
  return Array.from({ length }, () => alphabet[Math.floor(random() * alphabet.length)]).join('');
}

/** Everything a bad cgroup path can be. None of them names a real cgroup agentd may touch. */
function badCgroupPath(random: Random, ctx: Context): { path: unknown; why: string } {
  const real = pick(random, ctx.sentinels).cgroup;
  const root = real.dir.slice(0, real.dir.length - real.path.length - 1);
  const choices: (() => { path: unknown; why: string })[] = [
    () => ({ path: `${real.path}/../${real.path.split('/').pop()}`, why: '.. inside a real path' }),
    () => ({ path: `../../${randomName(random, 5)}`, why: 'leading ..' }),
    () => ({ path: `${root}/../freezer/${real.path}`, why: 'absolute with ..' }),
    () => ({ path: '/etc/../' + real.path + '/..', why: 'trailing ..' }),
    () => ({ path: `${real.path}\u0000`, why: 'trailing NUL' }),
    () => ({ path: `\u0000${real.path}`, why: 'leading NUL' }),
    () => ({ path: `${real.path.slice(0, 5)}\u0000/../${real.path}`, why: 'NUL in the middle' }),
    () => ({ path: 'a'.repeat(int(random, 4097, 9000)), why: 'longer than 4096' }),
    () => ({ path: `agentd-fuzz-${'x'.repeat(int(random, 256, 400))}`, why: 'segment longer than NAME_MAX' }),
    () => ({ path: Array.from({ length: int(random, 300, 900) }, () => 'ab').join('/'), why: 'very deep' }),
    () => ({ path: `agentd-fuzz-absent-${randomName(random, 8)}`, why: 'does not exist' }),
    () => ({ path: `${real.path}/cgroup.procs`, why: 'a file inside a cgroup' }),
    () => ({ path: `${real.path}/freezer.state`, why: 'a control file' }),
    () => ({ path: pick(random, ['/', '//', '.', './', '/.', '', '   ']), why: 'the root or empty' }),
    () => ({ path: root, why: 'the hierarchy root itself' }),
    () => ({ path: pick(random, ctx.symlinks), why: 'a symlink to a cgroup, outside the cgroup mounts' }),
    () => ({ path: `${pick(random, ctx.symlinks)}/x`, why: 'under a symlink' }),
    () => ({ path: '/sys/fs/cgroup', why: 'the cgroup mount parent' }),
    () => ({ path: '/proc/self/cwd', why: 'a magic symlink' }),
    () => ({ path: '\u202e' + real.path, why: 'a right-to-left override before a real path' }),
    () => ({ path: real.path + '/\ud800', why: 'a lone surrogate' }),
  ];
  return pick(random, choices)();
}

function wrongType(random: Random): unknown {
  return pick(random, [42, -1, 1.5, true, false, null, [], ['x'], {}, { path: 'x' }, 1e308, '', ' ']);
}

interface Context {
  readonly sentinels: readonly Workload[];
  readonly symlinks: readonly string[];
  /** imagesDir values that must be refused: symlinks, files, pseudo-filesystems... */
  readonly badImageDirs: readonly string[];
}

function validBody(random: Random, ctx: Context): Record<string, unknown> {
  const w = pick(random, ctx.sentinels);
  return { cgroup: w.cgroup.path, hierarchy: w.cgroup.hierarchy };
}

function generate(random: Random, ctx: Context): Generated {
  const kind = pick(random, [
    'cgroup-query',
    'cgroup-body',
    'wrong-type',
    'unknown-field',
    'huge-body',
    'truncated-json',
    'bad-method',
    'bad-id',
    'bad-route',
    'bad-query',
    'content-type',
    'body-on-get',
    'images-dir',
    'malformed-http',
  ] as const);
  const mutating = pick(random, ['/v1/cgroups/freeze', '/v1/cgroups/thaw', '/v1/checkpoints']);
  switch (kind) {
    case 'cgroup-query': {
      const { path, why } = badCgroupPath(random, ctx);
      const q = `cgroup=${encodeLoosely(String(path))}${random() < 0.5 ? `&hierarchy=${pick(random, hierarchies)}` : ''}`;
      return { kind, description: `GET state, cgroup ${why}`, bytes: httpBytes('GET', `/v1/cgroups/state?${q}`) };
    }
    case 'cgroup-body': {
      const { path, why } = badCgroupPath(random, ctx);
      const body: Record<string, unknown> = { cgroup: path };
      if (random() < 0.5) body.hierarchy = pick(random, hierarchies);
      return { kind, description: `POST ${mutating}, cgroup ${why}`, bytes: httpBytes('POST', mutating, JSON.stringify(body)) };
    }
    case 'wrong-type': {
      const body = validBody(random, ctx);
      const fields =
        mutating === '/v1/checkpoints'
          ? ['cgroup', 'hierarchy', 'after', 'shellJob', 'tcpEstablished', 'fileLocks', 'timeoutMs', 'imagesDir']
          : mutating === '/v1/cgroups/freeze'
            ? ['cgroup', 'hierarchy', 'timeoutMs']
            : ['cgroup', 'hierarchy'];
      const field = pick(random, fields);
      const flags = ['shellJob', 'tcpEstablished', 'fileLocks'];
      const value = flags.includes(field)
        ? pick(random, ['true', 1, 0, null, 'false', []])
        : field === 'timeoutMs'
          ? pick(random, ['100', 0, -5, 1.5, 86_400_001, 1e12, true, null, NaN])
          : field === 'hierarchy'
            ? pick(random, ['v3', 'V2', 'v1 ', 1, 2, null, true])
            : field === 'after'
              ? pick(random, ['never', 'Prior', 1, null])
              : field === 'imagesDir'
                ? pick(random, ['relative/dir', '', 5, null, ['/tmp']])
                : wrongType(random);
      body[field] = value;
      return {
        kind,
        description: `POST ${mutating}, ${field}=${JSON.stringify(value)}`,
        bytes: httpBytes('POST', mutating, JSON.stringify(body)),
      };
    }
    case 'unknown-field': {
      const body = validBody(random, ctx);
      const key = pick(random, [
        '__proto__',
        'constructor',
        'prototype',
        'toString',
        'cgroups',
        'Cgroup',
        'force',
        'pid',
        randomName(random, int(random, 1, 300)),
        '',
        '\u0000',
      ]);
      const text = JSON.stringify(body).replace(/}$/, `,${JSON.stringify(key)}:${JSON.stringify(wrongType(random))}}`);
      return {
        kind,
        description: `POST ${mutating}, unknown field ${JSON.stringify(key.slice(0, 20))}`,
        bytes: httpBytes('POST', mutating, text),
      };
    }
    case 'huge-body': {
      const size = int(random, 64 * 1024 + 1, 2 * 1024 * 1024);
      const text = JSON.stringify({ ...validBody(random, ctx), pad: 'x'.repeat(size) });
      if (random() < 0.3) {
        // No Content-Length: chunked, so the size is only found out while reading.
        const chunked = Buffer.from(`${text.length.toString(16)}\r\n${text}\r\n0\r\n\r\n`);
        return {
          kind,
          description: `POST ${mutating}, ${size}-byte chunked body`,
          bytes: Buffer.concat([
            httpBytes('POST', mutating, undefined, { 'Content-Type': 'application/json', 'Transfer-Encoding': 'chunked' }),
            chunked,
          ]),
        };
      }
      return { kind, description: `POST ${mutating}, ${size}-byte body`, bytes: httpBytes('POST', mutating, text) };
    }
    case 'truncated-json': {
      const text = JSON.stringify({ ...validBody(random, ctx), after: 'frozen' });
      const variants: (() => [string, Buffer])[] = [
        () => ['cut short', Buffer.from(text.slice(0, int(random, 1, text.length - 1)))],
        () => ['invalid UTF-8', Buffer.concat([Buffer.from(text.slice(0, -2)), Buffer.from([0xff, 0xfe, 0x22, 0x7d])])],
        () => ['a raw NUL byte', Buffer.from(text.replace(':', ':\u0000'))],
        () => ['a JSON array', Buffer.from(`[${text}]`)],
        () => ['a JSON string', Buffer.from(JSON.stringify(text))],
        () => ['null', Buffer.from('null')],
        () => ['two objects', Buffer.from(text + text)],
        () => ['single quotes', Buffer.from(text.replace(/"/g, "'"))],
        () => ['a trailing comma', Buffer.from(text.replace(/}$/, ',}'))],
        () => ['a BOM', Buffer.concat([Buffer.from([0xef, 0xbb, 0xbf]), Buffer.from(text)])],
      ];
      const [why, body] = pick(random, variants)();
      return { kind, description: `POST ${mutating}, JSON with ${why}`, bytes: httpBytes('POST', mutating, body) };
    }
    case 'bad-method': {
      const route = pick(random, ROUTES);
      const getRoute = !['/v1/cgroups/freeze', '/v1/cgroups/thaw'].includes(route) && route !== '/v1/checkpoints';
      const method = getRoute
        ? pick(random, ['POST', 'PUT', 'PATCH', 'DELETE', 'OPTIONS'])
        : pick(random, ['GET', 'PUT', 'PATCH', 'DELETE', 'OPTIONS']);
      const body = method === 'GET' || method === 'OPTIONS' ? undefined : JSON.stringify(validBody(random, ctx));
      if (route === '/v1/checkpoints' && method === 'GET') return generate(random, ctx); // a real listing: not bad
      return { kind, description: `${method} ${route}`, bytes: httpBytes(method, route, body) };
    }
    case 'bad-id': {
      const id = pick(random, [
        '..',
        '.',
        '%2e%2e',
        '%2E%2E%2F%2E%2E%2Fetc',
        'a%2Fb',
        '..%2F..%2Fetc%2Fpasswd',
        '%00',
        'abc%00def',
        '%zz',
        '%',
        'a'.repeat(int(random, 129, 400)),
        'x.failed',
        '.partial-x',
        'with%20space',
        '%C3%A9t%C3%A9',
        '-leading',
        `absent-${randomName(random, 10).replace(/\./g, '')}`,
        '%252e%252e',
      ]);
      const method = pick(random, ['GET', 'DELETE', 'POST'] as const);
      if (method === 'POST')
        return { kind, description: `restore ${id.slice(0, 30)}`, bytes: httpBytes('POST', `/v1/checkpoints/${id}/restore`, '{}') };
      return { kind, description: `${method} checkpoint ${id.slice(0, 30)}`, bytes: httpBytes(method, `/v1/checkpoints/${id}`) };
    }
    case 'bad-route': {
      for (;;) {
        const segments = Array.from({ length: int(random, 1, 6) }, () =>
          pick(random, [
            '..',
            '.',
            'v1',
            'v2',
            'cgroups',
            'checkpoints',
            '%2e%2e',
            '',
            'etc',
            'passwd',
            randomName(random, int(random, 1, 12)),
          ]),
        );
        const target = '/' + segments.join('/');
        const pathname = new URL(`http://agentd${target}`).pathname;
        if (ROUTES.includes(pathname) || /^\/v1\/checkpoints\/[^/]+(\/restore)?$/.test(pathname)) continue;
        const method = pick(random, ['GET', 'POST', 'DELETE']);
        return {
          kind,
          description: `${method} ${target.slice(0, 60)}`,
          bytes: httpBytes(method, target, method === 'POST' ? JSON.stringify(validBody(random, ctx)) : undefined),
        };
      }
    }
    case 'bad-query': {
      const w = pick(random, ctx.sentinels);
      const enc = encodeURIComponent(w.cgroup.path);
      const variants: [string, string][] = [
        ['a repeated cgroup', `/v1/cgroups/state?cgroup=${enc}&cgroup=${enc}`],
        ['an unknown parameter', `/v1/cgroups/state?cgroup=${enc}&force=1`],
        ['no cgroup', `/v1/cgroups/state?hierarchy=${w.cgroup.hierarchy}`],
        ['a bad hierarchy', `/v1/cgroups/state?cgroup=${enc}&hierarchy=v9`],
        ['a query on health', `/v1/health?verbose=1`],
        ['a query on a POST route', `/v1/cgroups/thaw?cgroup=${enc}`],
        ['a NUL in the query', `/v1/cgroups/state?cgroup=${enc}%00`],
        ['a 12 KiB query', `/v1/cgroups/state?cgroup=${'a'.repeat(12_000)}`],
        ['a bad percent escape', `/v1/cgroups/state?cgroup=%E0%A4%A`],
      ];
      const [why, target] = pick(random, variants);
      const post = target.includes('thaw');
      return {
        kind,
        description: `query with ${why}`,
        bytes: httpBytes(post ? 'POST' : 'GET', target, post ? JSON.stringify(validBody(random, ctx)) : undefined),
      };
    }
    case 'content-type': {
      const type = pick(random, [
        'text/plain',
        'application/x-www-form-urlencoded',
        'multipart/form-data; boundary=x',
        'application/jsonx',
        'json',
      ]);
      const body = JSON.stringify(validBody(random, ctx));
      return { kind, description: `POST ${mutating} as ${type}`, bytes: httpBytes('POST', mutating, body, { 'Content-Type': type }) };
    }
    case 'body-on-get': {
      const route = pick(random, ['/v1/health', '/v1', '/v1/checkpoints', '/v1/metrics', '/v1/host']);
      return { kind, description: `GET ${route} with a body`, bytes: httpBytes('GET', route, JSON.stringify(validBody(random, ctx))) };
    }
    case 'images-dir': {
      const dir = pick(random, ctx.badImageDirs);
      return {
        kind,
        description: `checkpoint with imagesDir ${dir}`,
        bytes: httpBytes('POST', '/v1/checkpoints', JSON.stringify({ ...validBody(random, ctx), imagesDir: dir })),
      };
    }
    case 'malformed-http': {
      const variants: [string, Buffer][] = [
        ['an unknown method', Buffer.from('FROBNICATE /v1/health HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n')],
        ['a space in the target', Buffer.from('GET /v1/cgroups/state?cgroup=a b HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n')],
        ['a NUL in the target', Buffer.from('GET /v1/health\u0000x HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n', 'latin1')],
        ['a bad header line', Buffer.from('GET /v1/health HTTP/1.1\r\nHost a\r\nConnection: close\r\n\r\n')],
        ['an absolute-form target', Buffer.from('GET http://evil/v1/health HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n')],
        ['an asterisk target', Buffer.from('OPTIONS * HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n')],
        [
          'headers over 16 KiB',
          Buffer.from(`GET /v1/health HTTP/1.1\r\nHost: a\r\nX-Junk: ${'j'.repeat(20_000)}\r\nConnection: close\r\n\r\n`),
        ],
        [
          'a negative Content-Length',
          Buffer.from('POST /v1/cgroups/thaw HTTP/1.1\r\nHost: a\r\nContent-Length: -5\r\nConnection: close\r\n\r\n{}'),
        ],
        [
          'two Content-Lengths',
          Buffer.from('POST /v1/cgroups/thaw HTTP/1.1\r\nHost: a\r\nContent-Length: 2\r\nContent-Length: 3\r\nConnection: close\r\n\r\n{}'),
        ],
        ['HTTP/2 preface', Buffer.from('PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n')],
      ];
      const [why, bytes] = pick(random, variants);
      return { kind, description: why, bytes };
    }
  }
}

interface Snapshot {
  readonly kernel: string[];
  readonly procs: string[];
  readonly cgroupDirs: string[];
  readonly locks: string[];
  readonly images: string[];
}

function snapshot(ctx: Context, dirs: AgentDirs): Snapshot {
  const subdirs = (dir: string): string[] =>
    readdirSync(dir, { withFileTypes: true })
      .filter((e) => e.isDirectory())
      .map((e) => join(dir, e.name));
  const locksDir = join(dirs.runDir, 'locks');
  return {
    kernel: ctx.sentinels.map((w) => `${w.cgroup.hierarchy}:${w.cgroup.path}=${kernelState(w.cgroup)}`),
    procs: ctx.sentinels.map((w) => lab.pidsOf(w.cgroup).sort().join(',')),
    cgroupDirs: [...new Set(ctx.sentinels.map((w) => join(w.cgroup.dir, '..')))]
      .flatMap((parent) => [parent, ...subdirs(parent).flatMap((d) => [d, ...subdirs(d)])])
      .sort(),
    // Lock records are rewritten by every request that takes a lock (an allowed but unusable imagesDir
    // is found in the checkpoint's preflight, under the lock); what must not change is that none is
    // held or unfinished.
    locks: existsSync(locksDir)
      ? readdirSync(locksDir)
          .filter((n) => !flockFree(join(locksDir, n)) || lockRecord(join(locksDir, n))?.phase !== 'finished')
          .map((n) => `${n}: held=${!flockFree(join(locksDir, n))} phase=${lockRecord(join(locksDir, n))?.phase}`)
      : [],
    images: existsSync(dirs.imagesDir) ? readdirSync(dirs.imagesDir).sort() : [],
  };
}

describe('bad input over the socket', { skip: hierarchies.length === 0 && 'no freezer hierarchy' }, () => {
  test(`${REQUESTS} generated bad requests: every one a 4xx with a JSON error, agentd keeps serving, no cgroup changes`, async (t) => {
    const seed = seedFromEnv();
    t.diagnostic(`seed ${seed} (FAULT_SEED=${seed} replays this run)`);
    const random = prng(seed);

    const sentinels: Workload[] = [];
    for (const h of hierarchies) {
      for (const state of ['THAWED', 'FROZEN'] as const) {
        const w = await startWorkload(lab, h, `sentinel-${h}-${state.toLowerCase()}`, { children: 0 });
        await setKernel(w.cgroup, state);
        sentinels.push(w);
        sentinelDirs.push(w.cgroup.dir);
      }
    }
    const links = lab.tempDir('links');
    const symlinks: string[] = [];
    for (const [i, w] of sentinels.entries()) {
      symlinks.push(join(links, `cgroup-${i}`));
      symlinkSync(w.cgroup.dir, symlinks.at(-1)!);
    }
    symlinkSync('/etc', join(links, 'etc'));
    symlinks.push(join(links, 'etc'));
    const target = join(lab.tempDir('symlink-target'), 'images');
    mkdirSync(target);
    symlinkSync(target, join(links, 'images-link'));
    symlinkSync(join(links, 'nowhere'), join(links, 'dangling'));
    writeFileSync(join(links, 'a-file'), 'not a directory\n');
    const v2root = sentinels.find((w) => w.cgroup.hierarchy === 'v2')?.cgroup.dir ?? '/sys/fs/cgroup/unified';
    const badImageDirs = [
      join(links, 'images-link'), // a symlink to a directory
      join(links, 'dangling'), // a symlink to nothing
      join(links, 'a-file'), // a regular file
      join(links, 'a-file', 'sub'), // under a regular file
      '/dev/null',
      `/proc/${process.pid}/agentd-images`, // procfs: mkdir there fails in a way Node's recursive mkdir never gives up on
      '/proc/1/x/y',
      '/sys/kernel/agentd-images',
      join(v2root, 'agentd-images'), // inside a cgroup: mkdir there would make a cgroup
      `/${'d'.repeat(300)}/images`, // a name longer than NAME_MAX
      '/tmp/\u0000images',
      'x'.repeat(5000),
      '/etc/agentd-images', // root-owned and not allowed
      `${join(links, 'images-link')}/..${'/..'.repeat(8)}/root`, // .. out of an allowed name
    ];
    const ctx: Context = { sentinels, symlinks, badImageDirs };

    const dirs = suite.agentDirs('input');
    // The agent allows the bad directories that can be named on its command line, so that the checks
    // on a root itself (symlink, file, pseudo-filesystem, a name too long) still get them; the last
    // two are refused for not being allowed, before anything is looked at.
    const allowed = badImageDirs.slice(0, -2).filter((dir) => isAbsolute(dir) && !dir.includes('\u0000'));
    const agent = await Agent.start(lab, dirs, { args: allowed.flatMap((dir) => ['--allow-images-dir', dir]) });
    // One good checkpoint beforehand: bad ids and deletes must leave it alone.
    const running = sentinels.find((w) => kernelState(w.cgroup) === 'THAWED')!;
    const good = await agent.request('POST', '/v1/checkpoints', { cgroup: running.cgroup.path, hierarchy: running.cgroup.hierarchy });
    assert.equal(good.status, 201, good.text);
    const before = snapshot(ctx, dirs);

    const failures: string[] = [];
    const kinds = new Map<string, number>();
    const statuses = new Map<number, number>();
    let unresponsive = false;
    for (let i = 0; i < REQUESTS && !unresponsive; i += 8) {
      const batch = Array.from({ length: Math.min(8, REQUESTS - i) }, () => generate(random, ctx));
      const replies = await Promise.all(batch.map((g) => rawRequest(agent.socket, g.bytes, 10_000)));
      for (const [j, g] of batch.entries()) {
        const reply = replies[j];
        figures.requests++;
        kinds.set(g.kind, (kinds.get(g.kind) ?? 0) + 1);
        statuses.set(reply.status, (statuses.get(reply.status) ?? 0) + 1);
        const message = reply.json?.error?.message;
        if (
          reply.status < 400 ||
          reply.status > 499 ||
          typeof message !== 'string' ||
          message.length < 10 ||
          typeof reply.json?.error?.code !== 'string'
        ) {
          failures.push(
            `#${i + j} ${g.kind}: ${g.description.slice(0, 150)} -> ${reply.status || 'no answer'} ${reply.text.slice(0, 200)}`,
          );
        }
      }
      if (replies.some((r) => r.status === 0) && !(await agent.health())) {
        unresponsive = true;
        failures.push(`agentd stopped answering after request #${i + 7}`);
      }
    }

    const healthy = await agent.health();
    if (!healthy) {
      t.diagnostic(`failures so far:\n${failures.slice(0, 40).join('\n')}`);
      assert.fail(`agentd no longer answers /v1/health (stuck at 100% CPU?); the last requests sent:\n${failures.slice(-8).join('\n')}`);
    }
    const after = snapshot(ctx, dirs);
    const changed = (['kernel', 'procs', 'cgroupDirs', 'locks', 'images'] as const).filter(
      (k) => JSON.stringify(before[k]) !== JSON.stringify(after[k]),
    );
    figures.cgroupsLeftWrong += before.kernel.filter((k, i) => k !== after.kernel[i]).length;
    for (const w of sentinels) {
      if (kernelState(w.cgroup) !== 'THAWED') continue;
      const from = counterValue(w.counters[0]);
      await waitUntil(`${w.cgroup.path} to keep counting`, () => counterValue(w.counters[0]) > from).catch(() =>
        failures.push(`${w.cgroup.path} stopped counting`),
      );
    }
    assert.deepEqual(failures.slice(0, 30), [], `${failures.length} requests were not answered with a 4xx JSON error`);
    assert.equal(
      verifyImage(join(dirs.imagesDir, good.json.id), good.json.id),
      undefined,
      'the good checkpoint is still complete and valid',
    );
    assert.deepEqual(auditImages(dirs.imagesDir).good, [good.json.id]);
    // A real request still works after all of it.
    const w = sentinels[0];
    const state = await agent.request(
      'GET',
      `/v1/cgroups/state?cgroup=${encodeURIComponent(w.cgroup.path)}&hierarchy=${w.cgroup.hierarchy}`,
    );
    assert.equal(state.status, 200, state.text);

    t.diagnostic(`kinds: ${[...kinds].map(([k, n]) => `${k} ${n}`).join(', ')}`);
    t.diagnostic(
      `statuses: ${[...statuses]
        .sort()
        .map(([s, n]) => `${s}x${n}`)
        .join(', ')}`,
    );
    t.diagnostic(figures.line('bad input'));
    assert.deepEqual(failures.slice(0, 30), [], `${failures.length} requests were not answered with a 4xx JSON error`);
    assert.deepEqual(
      changed,
      [],
      `changed: ${changed.map((k) => `${k}: ${JSON.stringify(before[k]).slice(0, 300)} -> ${JSON.stringify(after[k]).slice(0, 300)}`).join('; ')}`,
    );
    for (const s of sentinels) await setKernel(s.cgroup, 'THAWED');
    assert.equal(await agent.stop(), 0);
  });
});
