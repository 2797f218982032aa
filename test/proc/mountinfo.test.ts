// /proc/self/mountinfo parsing: unescaping, optional fields, and this host's real table.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { parseMountinfo, readMountinfo, unescapeMountField } from '../../src/proc/index.js';

test('octal escapes for space, tab, newline and backslash are undone', () => {
  assert.equal(unescapeMountField('/mnt/a\\040b\\011c\\012d\\134e'), '/mnt/a b\tc\nd\\e');
  assert.equal(unescapeMountField('/plain/path'), '/plain/path');
});

test('fields after the separator are found whatever the number of optional fields', () => {
  const text = [
    '36 35 98:0 /mnt1 /mnt/my\\040dir rw,noatime master:1 shared:7 - ext3 /dev/root rw,errors=continue',
    '40 23 0:35 / /sys/fs/cgroup/freezer rw,nosuid - cgroup cgroup rw,freezer',
    'a line without the separator',
    '',
  ].join('\n');
  assert.deepEqual(parseMountinfo(text), [
    { root: '/mnt1', mountPoint: '/mnt/my dir', fsType: 'ext3', superOptions: ['rw', 'errors=continue'] },
    { root: '/', mountPoint: '/sys/fs/cgroup/freezer', fsType: 'cgroup', superOptions: ['rw', 'freezer'] },
  ]);
});

test("this process's mount table has / and /proc", () => {
  const mounts = readMountinfo();
  assert.ok(
    mounts.some((m) => m.mountPoint === '/'),
    'a mount at /',
  );
  assert.ok(
    mounts.some((m) => m.mountPoint === '/proc' && m.fsType === 'proc'),
    'proc at /proc',
  );
});
