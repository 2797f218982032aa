// The recovery decision for a restore's lock record, on its own (src/checkpoint/recovery.ts): which
// records are undone, and which recorded processes are still the restore's. The process table is a
// table given here (a recycled pid is not something the kernel produces on demand); the real run is
// test/daemon/restore-recovery.test.ts.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { isUnfinishedRestore, restoreLeftovers } from '../../src/checkpoint/recovery.js';
import type { LockHolder } from '../../src/lock/index.js';
import type { ProcStat } from '../../src/proc/index.js';

function record(fields: Partial<LockHolder>): LockHolder {
  return {
    pid: 99,
    requestId: 'r1',
    operation: 'restore',
    phase: 'restoring',
    cgroup: 'jobs/restored',
    hierarchy: 'v2',
    since: '2026-12-01T00:00:00.000Z',
    ...fields,
  };
}

function table(rows: [pid: number, startTime: number, state?: string][]): (pid: number) => ProcStat | undefined {
  const byPid = new Map(
    rows.map(([pid, startTime, state]) => [
      pid,
      { pid, comm: 'x', state: state ?? 'T', ppid: 1, pgrp: pid, session: pid, flags: 0, startTime, cpuTicks: 0 },
    ]),
  );
  return (pid) => byPid.get(pid);
}

test('a restore is undone while restoring or starting, and left alone once restored, finished, or with no progress recorded', () => {
  assert.equal(isUnfinishedRestore(record({ phase: 'restoring' })), true);
  assert.equal(isUnfinishedRestore(record({ phase: 'starting' })), true);
  assert.equal(isUnfinishedRestore(record({ phase: 'restored' })), false, 'its processes were all started');
  assert.equal(isUnfinishedRestore(record({ phase: 'finished' })), false);
  assert.equal(isUnfinishedRestore(record({ phase: 'started' })), false, 'an older agentd recorded nothing to undo by');
  assert.equal(isUnfinishedRestore(record({ operation: 'checkpoint', phase: 'restoring' })), false, 'only a restore');
});

test('a restored process is killed only with its recorded start time; one of the tree under way only if it started after the agent', () => {
  const r = record({
    restoredProcesses: [
      { pid: 100, startTime: 5000 }, // still ours
      { pid: 101, startTime: 5000 }, // recycled: another process has the pid now
      { pid: 102, startTime: 5001 }, // gone
      { pid: 103, startTime: 5002 }, // a zombie: dead already
    ],
    restoringTree: { index: 1, pids: [200, 201, 202, 100], notBefore: 4000 },
  });
  const stat = table([
    [100, 5000],
    [101, 7777],
    [103, 5002, 'Z'],
    [200, 6000], // made by CRIU for the tree under way
    [201, 3999], // started before the agent: not the restore's
    [202, 4000, 'S'],
  ]);
  assert.deepEqual(restoreLeftovers(r, stat), { kill: [100, 200, 202], gone: [101, 102, 103, 201] });
});

test('a record without progress names nothing to kill', () => {
  assert.deepEqual(restoreLeftovers(record({}), table([[100, 1]])), { kill: [], gone: [] });
});
