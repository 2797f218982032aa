// The argument arrays and environment handed to CRIU (no CRIU run here).

import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { chooseNetworkLock, criuEnv, dumpArgs, preDumpArgs, restoreArgs } from '../../src/criu/index.js';

describe('CRIU arguments', () => {
  test('dump: the fixed core, then the options in order', () => {
    const base = { criuPath: '/usr/local/sbin/criu', pid: 42, imagesDir: '/var/img', freezeCgroup: '/sys/fs/cgroup/freezer/job' };
    assert.deepEqual(dumpArgs(base), [
      'dump',
      '-t',
      '42',
      '-D',
      '/var/img',
      '--freeze-cgroup',
      '/sys/fs/cgroup/freezer/job',
      '--leave-running',
      '-o',
      'dump.log',
      '-v3',
    ]);
    assert.deepEqual(dumpArgs({ ...base, shellJob: true, tcpEstablished: true, fileLocks: true, logName: 'd.log' }).slice(8), [
      '-o',
      'd.log',
      '-v3',
      '--shell-job',
      '--tcp-established',
      '--file-locks',
    ]);
    assert.deepEqual(dumpArgs({ ...base, logLevel: 4 }).slice(8, 11), ['-o', 'dump.log', '-v4']);
    assert.throws(
      () => dumpArgs({ ...base, logLevel: 5 }),
      (err: Error & { code?: string }) => err.code === 'EINVAL' && /0 to 4, got 5/.test(err.message),
    );
  });

  test('pre-dump: memory tracking always, the previous pre-dump relative to the images; the final dump builds on the last', () => {
    const base = {
      criuPath: '/usr/local/sbin/criu',
      pid: 42,
      imagesDir: '/var/img/tree-0/pre-1',
      freezeCgroup: '/sys/fs/cgroup/unified/job',
    };
    assert.deepEqual(preDumpArgs(base), [
      'pre-dump',
      '-t',
      '42',
      '-D',
      '/var/img/tree-0/pre-1',
      '--freeze-cgroup',
      '/sys/fs/cgroup/unified/job',
      '-o',
      'pre-dump.log',
      '-v3',
      '--track-mem',
    ]);
    assert.deepEqual(preDumpArgs({ ...base, imagesDir: '/var/img/tree-0/pre-2', prevImagesDir: '../pre-1', shellJob: true }).slice(7), [
      '-o',
      'pre-dump.log',
      '-v3',
      '--shell-job',
      '--track-mem',
      '--prev-images-dir',
      '../pre-1',
    ]);
    assert.equal(preDumpArgs(base).includes('--leave-running'), false, 'a pre-dump always leaves the tree running');
    const dump = { ...base, imagesDir: '/var/img/tree-0' };
    assert.deepEqual(dumpArgs({ ...dump, prevImagesDir: 'pre-2' }).slice(-3), ['--track-mem', '--prev-images-dir', 'pre-2']);
    assert.throws(() => dumpArgs({ ...dump, prevImagesDir: '/var/img/tree-0/pre-2' }), /relative/);
    assert.throws(() => preDumpArgs({ ...base, prevImagesDir: 'a//b' }), /relative/);
  });

  test('restore: detached with a pidfile; v1 and v2 cgroup roots; leave-stopped; manage-cgroups', () => {
    const base = { criuPath: '/usr/local/sbin/criu', imagesDir: '/var/img' };
    assert.deepEqual(restoreArgs(base, '/var/img/restore.pid'), [
      'restore',
      '-D',
      '/var/img',
      '-d',
      '-o',
      'restore.log',
      '-v4',
      '--pidfile',
      '/var/img/restore.pid',
      '--tcp-established',
    ]);
    const args = restoreArgs(
      {
        ...base,
        workDir: '/run/w',
        shellJob: true,
        leaveStopped: true,
        manageCgroups: 'soft',
        cgroupRoots: [
          { controller: 'freezer', path: '/jobs/b' },
          { controller: '', path: '/jobs/b' },
        ],
      },
      '/run/w/p',
      false,
    );
    assert.deepEqual(args, [
      'restore',
      '-D',
      '/var/img',
      '-W',
      '/run/w',
      '-o',
      'restore.log',
      '-v4',
      '--pidfile',
      '/run/w/p',
      '--shell-job',
      '--tcp-established',
      '--leave-stopped',
      '--manage-cgroups=soft',
      '--cgroup-root',
      'freezer:/jobs/b',
      '--cgroup-root',
      ':/jobs/b',
    ]);
  });

  test('the network lock goes with every dump and restore, --tcp-established or not: CRIU also locks a closed connection a process still holds', () => {
    const dump = { criuPath: '/usr/local/sbin/criu', pid: 42, imagesDir: '/var/img', freezeCgroup: '/sys/fs/cgroup/x' };
    assert.deepEqual(dumpArgs({ ...dump, tcpEstablished: true, networkLock: 'nftables' }).slice(11), [
      '--tcp-established',
      '--network-lock',
      'nftables',
    ]);
    assert.deepEqual(dumpArgs({ ...dump, tcpEstablished: true }).slice(11), ['--tcp-established'], "no lock known: CRIU's default");
    assert.deepEqual(dumpArgs({ ...dump, networkLock: 'nftables' }).slice(11), ['--network-lock', 'nftables']);
    assert.equal(dumpArgs(dump).includes('--network-lock'), false, "no lock known: CRIU's default");
    const restore = { criuPath: '/usr/local/sbin/criu', imagesDir: '/var/img', networkLock: 'iptables' as const };
    // --tcp-established on every restore, asked of the dump or not: a closed connection any dump saved comes back only with it.
    assert.deepEqual(restoreArgs(restore, '/var/img/p').slice(-3), ['--tcp-established', '--network-lock', 'iptables']);
  });

  test('the network lock is picked from what the host has: nftables in CRIU first, the iptables command next, else none', () => {
    assert.equal(chooseNetworkLock({ nftables: true, iptablesRestore: true }), 'nftables');
    assert.equal(chooseNetworkLock({ nftables: true, iptablesRestore: false }), 'nftables');
    assert.equal(chooseNetworkLock({ nftables: false, iptablesRestore: true }), 'iptables');
    assert.equal(chooseNetworkLock({ nftables: false, iptablesRestore: false }), undefined);
  });

  test('CRIU runs without hardware breakpoints unless asked (CRIU_FAULT=130)', () => {
    assert.equal(criuEnv(undefined).CRIU_FAULT, '130');
    assert.equal(criuEnv(false).CRIU_FAULT, '130');
    const saved = process.env.CRIU_FAULT;
    process.env.CRIU_FAULT = '130';
    try {
      assert.equal('CRIU_FAULT' in criuEnv(true), false);
    } finally {
      if (saved === undefined) delete process.env.CRIU_FAULT;
      else process.env.CRIU_FAULT = saved;
    }
  });
});
