import { test, describe, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdirSync, rmdirSync, symlinkSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { parseMountinfo, resolveCgroup, discoverMounts } from '../../src/cgroup/index.js';
import { isAgentError } from '../../src/errors/index.js';
import { Lab, anyHierarchy, unavailable, type TestCgroup } from '../helpers/lab.js';

const lab = new Lab('resolve');
after(() => lab.cleanup());

function escape(text: string): string {
  return text.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
}

function rejects(fn: () => unknown, code: string, pattern: RegExp): void {
  assert.throws(fn, (err: unknown) => {
    assert.ok(isAgentError(err), `expected an AgentError, got ${String(err)}`);
    assert.equal(err.code, code);
    assert.match(err.message, pattern);
    return true;
  });
}

describe('mountinfo parsing (pure logic)', () => {
  const v1Freezer = '36 30 0:33 / /sys/fs/cgroup/freezer rw,relatime - cgroup cgroup rw,freezer';
  const v1Cpu = '31 30 0:28 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu';
  const v2Hybrid = '40 30 0:37 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw';
  const v2Pure = '29 22 0:26 / /sys/fs/cgroup rw,nosuid,nodev,noexec,relatime shared:4 - cgroup2 cgroup2 rw,nsdelegate';
  const proc = '22 1 0:21 / /proc rw - proc proc rw';

  test('hybrid: v1 freezer and cgroup2 side by side', () => {
    assert.deepEqual(parseMountinfo([proc, v1Cpu, v1Freezer, v2Hybrid].join('\n')), {
      mode: 'hybrid',
      v1Freezer: '/sys/fs/cgroup/freezer',
      v2: '/sys/fs/cgroup/unified',
    });
  });
  test('pure v2 (optional fields such as shared:4 do not confuse the parser)', () => {
    assert.deepEqual(parseMountinfo([proc, v2Pure].join('\n')), { mode: 'unified', v1Freezer: undefined, v2: '/sys/fs/cgroup' });
  });
  test('legacy v1, with the freezer co-mounted and a space escaped in the mount point', () => {
    const coMounted = '36 30 0:33 / /cg/freezer\\040x rw - cgroup cgroup rw,cpu,freezer';
    assert.deepEqual(parseMountinfo([v1Cpu, coMounted].join('\n')), { mode: 'legacy', v1Freezer: '/cg/freezer x', v2: undefined });
  });
  test('a bind mount of a sub-cgroup is not taken for the hierarchy root', () => {
    const bind = '50 30 0:37 /jobs /mnt/jobs rw - cgroup2 cgroup2 rw';
    assert.equal(parseMountinfo(bind).v2, undefined);
  });
  test('this host: its hierarchies are found in /proc/self/mountinfo', () => {
    const mounts = discoverMounts();
    assert.ok(mounts.v1Freezer || mounts.v2, 'at least one freezer hierarchy found');
    if (mounts.mode === 'hybrid') assert.ok(mounts.v1Freezer && mounts.v2, 'a hybrid host shows both');
  });
});

const needsBoth = unavailable('v1') || unavailable('v2');

describe('resolving cgroup arguments on the real hierarchies (a hybrid host)', { skip: needsBoth }, () => {
  let both: { v1: TestCgroup; v2: TestCgroup };
  let onlyV1: TestCgroup;
  before(() => {
    both = { v1: lab.cgroup('v1', 'both'), v2: lab.cgroup('v2', 'both') };
    onlyV1 = lab.cgroup('v1', 'only-v1');
  });

  test('relative path, with or without a leading slash, prefers v2', () => {
    for (const arg of [both.v2.path, `/${both.v2.path}`, `${both.v2.path}/`, `./${both.v2.path}`]) {
      const ref = resolveCgroup(arg);
      assert.equal(ref.hierarchy, 'v2', arg);
      assert.equal(ref.path, both.v2.path);
      assert.equal(ref.dir, both.v2.dir);
    }
  });
  test('relative path that exists only in v1 resolves to v1', () => {
    const ref = resolveCgroup(onlyV1.path);
    assert.equal(ref.hierarchy, 'v1');
    assert.equal(ref.dir, onlyV1.dir);
  });
  test('--hierarchy overrides the preference', () => {
    assert.equal(resolveCgroup(both.v1.path, { hierarchy: 'v1' }).dir, both.v1.dir);
    rejects(() => resolveCgroup(onlyV1.path, { hierarchy: 'v2' }), 'ENOENT', /does not exist/);
  });
  test('absolute directory under a mount', () => {
    assert.equal(resolveCgroup(both.v1.dir).hierarchy, 'v1');
    assert.equal(resolveCgroup(both.v2.dir).hierarchy, 'v2');
    rejects(() => resolveCgroup(both.v1.dir, { hierarchy: 'v2' }), 'EINVAL', /in the v1 hierarchy, not v2/);
  });
  test('".." segments are rejected, even when they would land inside the mount', () => {
    rejects(() => resolveCgroup(`${both.v2.path}/../${both.v2.path.split('/')[0]}`), 'EINVAL', /"\.\." segments/);
    rejects(() => resolveCgroup('../etc'), 'EINVAL', /"\.\." segments/);
    rejects(() => resolveCgroup(`${lab.mount('v2')}/../../../etc`), 'EINVAL', /"\.\." segments/);
  });
  test('the root cgroup is refused', () => {
    for (const arg of ['/', '', '.', lab.mount('v1'), lab.mount('v2'), '//']) {
      rejects(() => resolveCgroup(arg), 'EINVAL', /root cgroup|non-empty/);
    }
  });
  test('a path that does not exist is ENOENT and names the path', () => {
    rejects(() => resolveCgroup(`${lab.prefix}/no-such-cgroup`), 'ENOENT', new RegExp(`${lab.prefix}/no-such-cgroup`));
    rejects(() => resolveCgroup(`${both.v2.dir}/missing`), 'ENOENT', /missing/);
  });
  test('NUL bytes, non-strings and absurd lengths are EINVAL', () => {
    rejects(() => resolveCgroup('jobs\0x'), 'EINVAL', /NUL/);
    rejects(() => resolveCgroup(42), 'EINVAL', /non-empty string/);
    rejects(() => resolveCgroup('a/'.repeat(3000)), 'EINVAL', /longer than/);
  });
  test('a cgroup removed and made again is resolved afresh: never a stale answer', () => {
    const again = lab.cgroup('v2', 'again');
    assert.equal(resolveCgroup(again.path, { hierarchy: 'v2' }).dir, again.dir);
    rmdirSync(again.dir);
    rejects(() => resolveCgroup(again.path, { hierarchy: 'v2' }), 'ENOENT', /does not exist/);
    mkdirSync(again.dir);
    const ref = resolveCgroup(again.path, { hierarchy: 'v2' });
    assert.equal(ref.dir, again.dir);
    assert.equal(ref.path, again.path);
    // A file of the cgroup is still no cgroup once the cgroup itself has been resolved.
    rejects(() => resolveCgroup(`${again.path}/cgroup.procs`, { hierarchy: 'v2' }), 'ENOENT', /not a directory/);
  });
  test('a regular file inside a cgroup is not a cgroup', () => {
    rejects(() => resolveCgroup(`${both.v2.path}/cgroup.procs`), 'ENOENT', /cgroup\.procs is not a directory/);
  });
  test('a name found in neither hierarchy: the error names both places tried, v2 first', () => {
    const name = `${lab.prefix}/no-such-cgroup`;
    const v2 = escape(join(lab.mount('v2'), name));
    const v1 = escape(join(lab.mount('v1'), name));
    rejects(() => resolveCgroup(name), 'ENOENT', new RegExp(`does not exist \\(no ${v2}; no ${v1}\\)`));
    rejects(() => resolveCgroup(`/${name}`), 'ENOENT', new RegExp(`no ${v2}; no ${v1}`));
    rejects(() => resolveCgroup(name, { hierarchy: 'v1' }), 'ENOENT', new RegExp(`does not exist \\(no ${v1}\\)$`));
    // Only in v1 there, as a directory without the v2 freezer file: not a freezer cgroup of v2.
    rejects(
      () => resolveCgroup(`${onlyV1.path}/missing`),
      'ENOENT',
      new RegExp(`no ${escape(join(lab.mount('v2'), onlyV1.path, 'missing'))}; no `),
    );
  });
});

describe('resolving cgroup arguments on whichever hierarchy this host has', () => {
  const hierarchy = anyHierarchy();
  const cgroup = lab.cgroup(hierarchy, 'any');

  test('relative and absolute forms of one cgroup resolve alike', () => {
    for (const arg of [cgroup.path, `/${cgroup.path}`, cgroup.dir]) {
      const ref = resolveCgroup(arg);
      assert.equal(ref.hierarchy, hierarchy, arg);
      assert.equal(ref.dir, cgroup.dir);
    }
  });
  test('an absolute path outside the freezer hierarchies is EINVAL and says where cgroups live', () => {
    const mounts = discoverMounts();
    const listed = [mounts.v2, mounts.v1Freezer].filter((m): m is string => m !== undefined);
    // On a pure v2 host /sys/fs/cgroup/memory/foo lies under the v2 mount: a missing v2 cgroup there.
    const outside = ['/etc/passwd', '/sys/fs/cgroup/memory/foo', '/proc/1', '/tmp/no-such-thing'].filter(
      (arg) => !listed.some((m) => arg.startsWith(`${m}/`)),
    );
    for (const arg of outside) {
      for (const options of [{}, { hierarchy }]) {
        rejects(() => resolveCgroup(arg, options), 'EINVAL', /outside the freezer hierarchies; cgroups live under /);
        for (const mount of listed) rejects(() => resolveCgroup(arg, options), 'EINVAL', new RegExp(escape(mount)));
      }
    }
    // A leading slash on a name relative to a hierarchy root is still that name, found or not.
    assert.equal(resolveCgroup(`/${cgroup.path}`).dir, cgroup.dir);
    rejects(() => resolveCgroup(`/${lab.prefix}/missing`), 'ENOENT', /does not exist/);
  });
  test('"..", the root and missing paths are refused', () => {
    rejects(() => resolveCgroup(`${cgroup.path}/..`), 'EINVAL', /"\.\." segments/);
    rejects(() => resolveCgroup(lab.mount(hierarchy)), 'EINVAL', /root cgroup/);
    rejects(() => resolveCgroup(`${cgroup.path}/missing`), 'ENOENT', /missing/);
  });

  // cgroupfs cannot hold a symlink, so the kernel cannot show this case; a temporary directory stands
  // in for a mount here, and only the resolver's containment check is under test.
  test('a symlink that leaves the mount is refused (stand-in mount: cgroupfs cannot hold symlinks)', () => {
    const fakeRoot = lab.tempDir('fake-mount');
    const outside = lab.tempDir('outside');
    writeFileSync(join(outside, 'cgroup.freeze'), '0');
    mkdirSync(join(fakeRoot, 'inside'));
    writeFileSync(join(fakeRoot, 'inside', 'cgroup.freeze'), '0');
    symlinkSync(outside, join(fakeRoot, 'escape'));
    const mounts = { mode: 'unified' as const, v2: fakeRoot };
    assert.equal(resolveCgroup('inside', { mounts }).path, 'inside');
    rejects(() => resolveCgroup('escape', { mounts }), 'EINVAL', /outside the v2 hierarchy/);
  });
});
