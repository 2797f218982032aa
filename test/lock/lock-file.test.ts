// The lock files themselves: where they live, what they are called, what they say, and that a
// planted symlink or hard link never redirects them. Also CgroupControl as the guard of plain
// freeze and thaw requests.

import { test, describe, after } from 'node:test';
import assert from 'node:assert/strict';
import {
  chmodSync,
  closeSync,
  existsSync,
  linkSync,
  openSync,
  lstatSync,
  mkdirSync,
  readFileSync,
  readdirSync,
  readlinkSync,
  statSync,
  symlinkSync,
  writeFileSync,
} from 'node:fs';
import { basename, dirname, join } from 'node:path';
import type { CgroupRef, Hierarchy } from '../../src/cgroup/index.js';
import { isAgentError } from '../../src/errors/index.js';
import { CgroupControl } from '../../src/lock/index.js';
import { lockFileName } from '../../src/lock/lock-name.js';
import { HIERARCHIES, Lab, unavailable } from '../helpers/lab.js';
import { beginCheckpoint, busy, flockFree, kernelState, makeControl, refOf } from './helpers.js';

const lab = new Lab('lock-file');
after(() => lab.cleanup());

function fakeRef(hierarchy: Hierarchy, path: string): CgroupRef {
  return { hierarchy, path, dir: `/nonexistent/${path}`, root: '/nonexistent' };
}

function refused(code: string, pattern: RegExp): (err: unknown) => boolean {
  return (err: unknown) => {
    assert.ok(isAgentError(err), `expected an AgentError, got ${String(err)}`);
    assert.equal(err.code, code, err.message);
    assert.match(err.message, pattern);
    return true;
  };
}

describe('lock file names', () => {
  const nasty = [
    'jobs/x',
    'jobs%2Fx',
    'jobs%252Fx',
    'jobs/x/..',
    '..',
    'a b/ünïcødé/日本語',
    'per%cent/%00/%2e%2e',
    'x'.repeat(255),
    'x'.repeat(254) + 'y',
    `${'a'.repeat(200)}/${'b'.repeat(200)}/${'c'.repeat(200)}`,
    `${'a'.repeat(200)}/${'b'.repeat(200)}/${'c'.repeat(199)}d`,
    'v2-jobs',
    'new\nline',
  ];

  test('8a. names stay inside the locks directory, fit in 255 bytes, and differ for every cgroup and hierarchy', () => {
    const control = new CgroupControl({ runDir: '/run/agentd-never-created' });
    const seen = new Map<string, string>();
    for (const hierarchy of ['v1', 'v2'] as Hierarchy[]) {
      for (const path of nasty) {
        const ref = fakeRef(hierarchy, path);
        const file = control.lockPath(ref);
        const name = lockFileName(ref);
        assert.equal(dirname(file), control.locksDir, `${path}: stays in the locks dir`);
        assert.equal(basename(file), name);
        assert.ok(!name.includes('/') && !name.includes('\0') && !name.includes('\n'), name);
        assert.ok(name !== '.' && name !== '..' && !name.startsWith('.'), name);
        assert.ok(Buffer.byteLength(name) <= 255, `${name.length} bytes`);
        assert.match(name, /^v[12][-+][A-Za-z0-9._%+-]+\.lock$/);
        const other = seen.get(name);
        assert.equal(other, undefined, `${hierarchy}:${path} and ${other} share ${name}`);
        seen.set(name, `${hierarchy}:${path}`);
      }
    }
    assert.equal(lockFileName(fakeRef('v2', 'jobs/build-42')), 'v2-jobs%2Fbuild-42.lock');
    assert.equal(lockFileName(fakeRef('v1', 'a%b/ü')), 'v1-a%25b%2F%C3%BC.lock');
    assert.match(lockFileName(fakeRef('v2', 'x'.repeat(255))), /^v2\+sha256-[0-9a-f]{64}\.lock$/);
    assert.equal(existsSync('/run/agentd-never-created'), false, 'naming touches nothing');
  });
});

for (const hierarchy of HIERARCHIES) {
  describe(`lock files on ${hierarchy}`, { skip: unavailable(hierarchy) }, () => {
    test('8b. a cgroup with a nasty real name gets its own lock file; directories are created 0700; the record says who holds it', async () => {
      const cgroup = lab.cgroup(hierarchy, 'we%ird name-ünï');
      const control = makeControl(lab);
      const ref = refOf(cgroup);
      assert.equal(existsSync(control.runDir), false);
      assert.equal(control.status(ref).locked, false, 'status creates nothing');
      assert.equal(existsSync(control.runDir), false);

      const lease = control.lease(ref, { requestId: 'n1', operation: 'freeze' });
      const lockFile = control.lockPath(ref);
      let reader: number | undefined;
      try {
        assert.equal(statSync(control.runDir).mode & 0o7777, 0o700);
        assert.equal(statSync(control.locksDir).mode & 0o7777, 0o700);
        assert.equal(statSync(control.locksDir).uid, 0);
        assert.deepEqual(readdirSync(control.locksDir), [basename(lockFile)]);
        assert.equal(statSync(lockFile).mode & 0o777, 0o600);

        const record = JSON.parse(readFileSync(lockFile, 'utf8').split('\n')[0]);
        assert.equal(record.pid, process.pid);
        assert.equal(record.requestId, 'n1');
        assert.equal(record.operation, 'freeze');
        assert.equal(record.phase, 'started');
        assert.equal(record.cgroup, cgroup.path);
        assert.equal(record.hierarchy, hierarchy);
        assert.ok(!Number.isNaN(Date.parse(record.since)));
        lease.update({ phase: 'dumping', priorState: 'THAWED', imageDir: '/var/lib/agentd/images/x' });
        const updated = JSON.parse(readFileSync(lockFile, 'utf8'));
        assert.deepEqual(
          [updated.phase, updated.priorState, updated.imageDir, updated.since],
          ['dumping', 'THAWED', '/var/lib/agentd/images/x', record.since],
        );
        assert.equal(control.status(ref).holder?.phase, 'dumping');

        // The lock fd is close-on-exec: a child such as CRIU must never inherit (and so prolong) the lock.
        const fd = readdirSync('/proc/self/fd').find((n) => {
          try {
            return readlinkSync(`/proc/self/fd/${n}`) === lockFile;
          } catch {
            return false;
          }
        });
        assert.ok(fd, 'the lease keeps the lock file open');
        const flags = parseInt(/^flags:\s+(\d+)$/m.exec(readFileSync(`/proc/self/fdinfo/${fd}`, 'utf8'))![1], 8);
        assert.ok(flags & 0o2000000, `O_CLOEXEC in ${flags.toString(8)}`);
        reader = openSync(lockFile, 'r');
      } finally {
        lease.release();
      }
      // A reader that opened the file before the release reads a finished record, never a live one.
      const finished = JSON.parse(readFileSync(reader!, 'utf8'));
      closeSync(reader!);
      assert.equal(finished.phase, 'finished', 'release marks the record finished');
      assert.equal(existsSync(lockFile), false, 'and removes the file, which nothing holds any more');
      assert.deepEqual(readdirSync(control.locksDir), []);
      assert.throws(() => lease.update({ phase: 'late' }), refused('EINVAL', /already released/));
      assert.deepEqual(control.staleLocks(), []);
    });

    test('8c. a symlink planted at the lock name is never followed: clear error, target untouched', async () => {
      const cgroup = lab.cgroup(hierarchy, 'symlinked');
      const control = makeControl(lab);
      const ref = refOf(cgroup);
      const target = join(lab.tempDir('precious'), 'shadow');
      writeFileSync(target, 'precious\n');
      chmodSync(target, 0o644);
      mkdirSync(control.locksDir, { recursive: true, mode: 0o700 });
      const lockFile = control.lockPath(ref);
      symlinkSync(target, lockFile);

      const symlink = refused('EACCES', new RegExp(`lock file .* is a symbolic link; refusing to follow it`));
      await assert.rejects(control.freeze(ref), symlink);
      assert.throws(() => beginCheckpoint(control, ref, { requestId: 's1' }), symlink);
      assert.throws(() => control.status(ref), symlink);
      assert.throws(() => control.forget(ref), symlink);
      assert.deepEqual(control.staleLocks(), []);
      assert.equal(readFileSync(target, 'utf8'), 'precious\n', 'the target was not written');
      assert.equal(statSync(target).mode & 0o777, 0o644);
      assert.ok(lstatSync(lockFile).isSymbolicLink(), 'the symlink is left for an operator to look at');
      assert.equal(kernelState(cgroup), 'THAWED', 'nothing was frozen');
      assert.equal(flockFree(target), true, 'and the target was never locked');
    });

    test('8d. a hard link planted at the lock name is refused too; a locks dir that is a symlink is refused', async () => {
      const cgroup = lab.cgroup(hierarchy, 'hardlinked');
      const control = makeControl(lab);
      const ref = refOf(cgroup);
      const target = join(lab.tempDir('precious'), 'passwd');
      writeFileSync(target, 'root:x:0:0\n');
      mkdirSync(control.locksDir, { recursive: true, mode: 0o700 });
      linkSync(target, control.lockPath(ref));
      assert.throws(
        () => control.lease(ref, { requestId: 'h1', operation: 'thaw' }),
        refused('EACCES', /has 2 hard links; refusing to use it/),
      );
      assert.equal(readFileSync(target, 'utf8'), 'root:x:0:0\n');

      const elsewhere = lab.tempDir('elsewhere');
      const runDir = join(lab.tempDir('run'), 'agentd');
      mkdirSync(runDir, { mode: 0o700 });
      symlinkSync(elsewhere, join(runDir, 'locks'));
      const redirected = new CgroupControl({ runDir });
      assert.throws(
        () => redirected.lease(ref, { requestId: 'h2', operation: 'freeze' }),
        refused('EACCES', /is not a directory \(a symlink/),
      );
      assert.deepEqual(readdirSync(elsewhere), []);

      // A locks dir left with looser permissions is tightened to 0700.
      const loose = join(lab.tempDir('run'), 'agentd');
      mkdirSync(join(loose, 'locks'), { recursive: true, mode: 0o755 });
      chmodSync(join(loose, 'locks'), 0o755);
      const tightened = new CgroupControl({ runDir: loose });
      tightened.lease(ref, { requestId: 'h3', operation: 'freeze' }).release();
      assert.equal(statSync(join(loose, 'locks')).mode & 0o7777, 0o700);
    });

    test('freeze and thaw go through the lock: refused while another operation holds it, the lock free afterwards', async () => {
      const cgroup = lab.cgroup(hierarchy, 'guarded');
      lab.spawnIn(cgroup, 'sleep', ['100000']);
      await lab.waitForProcesses(cgroup, 1);
      const control = makeControl(lab);
      const ref = refOf(cgroup);

      const frozen = await control.freeze(ref, { requestId: 'g1' });
      assert.equal(frozen.state, 'FROZEN');
      assert.equal(frozen.locked, false);
      const lockFile = control.lockPath(ref);
      assert.equal(existsSync(lockFile), false, 'the freeze released (and removed) its lock file');

      const lease = control.lease(ref, { requestId: '9b1c', operation: 'freeze' });
      try {
        const inProgress = new RegExp(
          `^cgroup ${hierarchy}:${cgroup.path} is busy: a freeze \\(request 9b1c\\) is in progress since \\d\\d:\\d\\d:\\d\\d$`,
        );
        await assert.rejects(control.thaw(ref), busy(inProgress));
        assert.throws(() => control.forget(ref), busy(inProgress));
        assert.equal(kernelState(cgroup), 'FROZEN');
        assert.equal(control.status(ref).state, 'FROZEN', 'a lock held for a freeze is not CHECKPOINTING');
      } finally {
        lease.release();
      }
      const thawed = await control.thaw(ref, { requestId: 'g2' });
      assert.equal(thawed.state, 'THAWED');
      assert.equal(flockFree(lockFile), true);
      writeFileSync(lockFile, ''); // as flock(1) leaves one
      control.forget(ref);
      assert.equal(existsSync(lockFile), false, 'forget removes an unlocked lock file');
      control.forget(ref); // and is quiet when there is none
    });

    test("a thaw of a cgroup frozen by its parent keeps the driver's EBUSY and leaves no lock held", async () => {
      const parent = lab.cgroup(hierarchy, 'parent');
      const child = lab.cgroup(hierarchy, 'parent/child');
      lab.spawnIn(child, 'sleep', ['100000']);
      await lab.waitForProcesses(child, 1);
      const control = makeControl(lab);
      await control.freeze(refOf(parent));
      const childRef = refOf(child);
      await assert.rejects(control.thaw(childRef), busy(/frozen by its parent/));
      const status = control.status(childRef);
      assert.equal(status.state, 'FROZEN');
      assert.equal(status.parentFreezing, true);
      assert.equal(status.frozenBy, parent.path);
      assert.equal(status.locked, false);
      assert.deepEqual(
        control.staleLocks().map((h) => h.cgroup),
        [],
        'a refused thaw is finished, not stale',
      );
      // A checkpoint of the child is allowed: the kernel says FROZEN.
      const hold = beginCheckpoint(control, childRef, { requestId: 'pc' });
      assert.equal((await hold.end()).consistent, true);
      hold.lease.release();
      await control.thaw(refOf(parent));
      assert.equal(kernelState(child), 'THAWED');
    });

    test('no lock file is left once nothing holds it: after freeze, thaw, a checkpoint hold, and refused requests', async () => {
      const parent = lab.cgroup(hierarchy, 'tidy');
      const child = lab.cgroup(hierarchy, 'tidy/child');
      lab.spawnIn(child, 'sleep', ['100000']);
      await lab.waitForProcesses(child, 1);
      const control = makeControl(lab);
      const ref = refOf(child);
      const left = () => readdirSync(control.locksDir);

      await control.freeze(ref);
      assert.deepEqual(left(), [], 'after a freeze');
      const hold = beginCheckpoint(control, ref, { requestId: 't1' });
      assert.deepEqual(left(), [basename(control.lockPath(ref))], 'one file while the checkpoint holds it');
      assert.equal((await hold.end()).consistent, true);
      hold.lease.release();
      assert.deepEqual(left(), [], 'after a checkpoint hold');
      await control.thaw(ref);
      assert.deepEqual(left(), [], 'after a thaw');

      assert.throws(() => beginCheckpoint(control, ref, { requestId: 't2' }), busy(/not FROZEN/));
      assert.deepEqual(left(), [], 'after a checkpoint refused for a THAWED cgroup');
      const lease = control.lease(ref, { requestId: 't3', operation: 'freeze' });
      await assert.rejects(control.freeze(ref), busy(/request t3/));
      lease.release();
      assert.deepEqual(left(), [], 'after a freeze refused while another request held the lock');
      await control.freeze(refOf(parent));
      await assert.rejects(control.thaw(ref), busy(/frozen by its parent/));
      await control.thaw(refOf(parent));
      assert.deepEqual(left(), [], 'after a thaw refused for a cgroup frozen by its parent');
      assert.equal(kernelState(child), 'THAWED');
    });
  });
}
