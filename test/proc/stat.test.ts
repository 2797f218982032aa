// /proc/PID/stat parsing: a command name with spaces and parentheses, and real processes.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { parseProcStat, readProcStat } from '../../src/proc/index.js';

test('fields are counted after the last parenthesis, whatever the command name holds', () => {
  const text = '4242 (a b) (c)) S 1 4242 4242 0 -1 4194560 95 0 0 0 7 5 0 0 20 0 1 0 123456 1000 10\n';
  assert.deepEqual(parseProcStat(4242, text), {
    pid: 4242,
    comm: 'a b) (c)',
    state: 'S',
    ppid: 1,
    pgrp: 4242,
    session: 4242,
    flags: 4194560,
    startTime: 123456,
    cpuTicks: 12,
  });
});

test('this process, a stopped child, and a pid that is gone', async (t) => {
  const self = readProcStat(process.pid);
  assert.equal(self?.pid, process.pid);
  assert.equal(self?.ppid, process.ppid);
  assert.ok(self !== undefined && self.startTime > 0);

  const child = spawn('sleep', ['30'], { stdio: 'ignore', detached: true });
  t.after(() => child.kill('SIGKILL'));
  await once(child, 'spawn');
  process.kill(child.pid!, 'SIGSTOP');
  for (let i = 0; readProcStat(child.pid!)?.state !== 'T' && i < 1000; i++) await new Promise((r) => setTimeout(r, 5));
  const stopped = readProcStat(child.pid!);
  assert.equal(stopped?.state, 'T');
  assert.equal(stopped?.comm, 'sleep');
  assert.equal(stopped?.ppid, process.pid);
  assert.equal(stopped?.pgrp, child.pid, 'a detached child leads its own group');
  assert.equal(stopped?.session, child.pid, 'and its own session');

  child.kill('SIGKILL');
  await once(child, 'exit');
  assert.equal(readProcStat(child.pid!), undefined, 'reaped: no /proc entry');
});
