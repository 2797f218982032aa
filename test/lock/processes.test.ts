// The lock across processes, as the kernel sees it (docs/freezer.md, rule 3 and
// rule 6, the lock dies with its holder): many agent processes racing for one checkpoint, a holder killed with SIGKILL, and
// flock(1) honouring the lock from a shell.

import { test, describe, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdirSync, readdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import type { ChildProcess } from 'node:child_process';
import { HIERARCHIES, Lab, unavailable } from '../helpers/lab.js';
import { beginCheckpoint, CONTENDER, flockFree, holdWithShellTool, kernelState, killAndWait, makeControl, refOf } from './helpers.js';

const lab = new Lab('lock-procs');
after(() => lab.cleanup());

const CONTENDERS = 16;
// Each hammering process goes on until every one has both taken the lock and been refused this many
// times: collisions are then certain, not a matter of how the two were scheduled.
const HAMMER_QUOTA = 500;

interface HammerCounts {
  pid: number;
  rounds: number;
  won: number;
  refused: number;
  overlaps: number;
  foreignRecords: number;
  errors: string[];
}

interface Outcome {
  pid: number;
  requestId: string;
  outcome: 'won' | 'refused';
  code?: string;
  message?: string;
  lockFile?: string;
}

/** Resolves with the child's JSON lines, one at a time. */
function jsonLines(child: ChildProcess): () => Promise<Record<string, unknown>> {
  const queue: Record<string, unknown>[] = [];
  const waiting: ((line: Record<string, unknown>) => void)[] = [];
  let ended = false;
  const lines = createInterface({ input: child.stdout! });
  lines.on('line', (line) => {
    const value = JSON.parse(line) as Record<string, unknown>;
    const next = waiting.shift();
    if (next) next(value);
    else queue.push(value);
  });
  lines.on('close', () => {
    ended = true;
    for (const w of waiting.splice(0)) w({ closed: true });
  });
  return () => {
    const ready = queue.shift();
    if (ready) return Promise.resolve(ready);
    if (ended) return Promise.resolve({ closed: true });
    return new Promise((resolve) => waiting.push(resolve));
  };
}

function withTimeout<T>(promise: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`timed out after ${ms} ms: ${what}`)), ms);
  });
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
}

function exited(child: ChildProcess): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return Promise.resolve();
  return new Promise((resolve) => child.once('exit', () => resolve()));
}

for (const hierarchy of HIERARCHIES) {
  describe(`the lock across processes on ${hierarchy}`, { skip: unavailable(hierarchy) }, () => {
    test(`3. ${CONTENDERS} processes race for one checkpoint: exactly one wins, every other gets EBUSY`, async () => {
      const cgroup = lab.cgroup(hierarchy, 'race');
      lab.spawnIn(cgroup, 'sleep', ['100000']);
      await lab.waitForProcesses(cgroup, 1);
      const control = makeControl(lab);
      const ref = refOf(cgroup);
      await control.freeze(ref);

      const children = Array.from({ length: CONTENDERS }, (_, i) =>
        lab.spawn(process.execPath, [CONTENDER, control.runDir, hierarchy, cgroup.path, `req-${i}`, 'contend'], {
          stdio: ['pipe', 'pipe', 'inherit'],
        }),
      );
      const readers = children.map(jsonLines);
      try {
        // Every contender has loaded the lock module and waits; then all are let go at once. (Up to
        // 2 minutes: 16 node processes took over 30 s to start on 2 emulated CPUs.)
        const ready = await withTimeout(Promise.all(readers.map((next) => next())), 120_000, 'contenders starting');
        assert.ok(
          ready.every((r) => r.ready === true),
          JSON.stringify(ready),
        );
        for (const child of children) child.stdin!.write('go\n');
        const outcomes = (await withTimeout(
          Promise.all(readers.map((next) => next())),
          120_000,
          'contenders trying',
        )) as unknown as Outcome[];

        const winners = outcomes.filter((o) => o.outcome === 'won');
        const refused = outcomes.filter((o) => o.outcome === 'refused');
        assert.equal(winners.length, 1, `exactly one winner: ${JSON.stringify(outcomes)}`);
        assert.equal(refused.length, CONTENDERS - 1);
        const winner = winners[0];
        for (const loser of refused) {
          assert.equal(loser.code, 'EBUSY', JSON.stringify(loser));
          assert.match(loser.message!, new RegExp(`^cgroup ${hierarchy}:${cgroup.path} is `));
          // A loser names the winner, unless it looked in the microseconds before the winner wrote its record.
          const named = /request (req-\d+)/.exec(loser.message!)?.[1];
          if (named !== undefined) assert.equal(named, winner.requestId);
        }

        const status = control.status(ref);
        assert.equal(status.state, 'CHECKPOINTING');
        assert.equal(status.holder?.pid, winner.pid);
        assert.equal(status.holder?.requestId, winner.requestId);
        assert.equal(kernelState(cgroup), 'FROZEN');
      } finally {
        for (const child of children) child.stdin!.end();
        await withTimeout(Promise.all(children.map(exited)), 30_000, 'contenders exiting');
      }
      assert.equal(control.status(ref).locked, false, 'the winner released on exit');
      assert.equal(control.status(ref).state, 'FROZEN');
    });

    test('5. a holder killed with SIGKILL while CHECKPOINTING frees the lock at once; the cgroup stays FROZEN', async () => {
      const cgroup = lab.cgroup(hierarchy, 'killed-holder');
      lab.spawnIn(cgroup, 'sleep', ['100000']);
      await lab.waitForProcesses(cgroup, 1);
      const control = makeControl(lab);
      const ref = refOf(cgroup);
      await control.freeze(ref);
      const lockFile = control.lockPath(ref);

      const holder = lab.spawn(process.execPath, [CONTENDER, control.runDir, hierarchy, cgroup.path, 'dead-1', 'hold'], {
        stdio: ['pipe', 'pipe', 'inherit'],
      });
      const outcome = (await withTimeout(jsonLines(holder)(), 30_000, 'holder starting')) as unknown as Outcome;
      assert.equal(outcome.outcome, 'won', JSON.stringify(outcome));
      assert.equal(control.status(ref).state, 'CHECKPOINTING');
      assert.equal(flockFree(lockFile), false);

      holder.kill('SIGKILL');
      await exited(holder);

      assert.equal(flockFree(lockFile), true, "the kernel dropped the dead holder's lock");
      const status = control.status(ref);
      assert.equal(status.state, 'FROZEN', 'not CHECKPOINTING, not thawed');
      assert.equal(status.locked, false);
      assert.equal(status.holder, undefined);
      assert.equal(kernelState(cgroup), 'FROZEN');

      const stale = control.staleLocks();
      assert.equal(stale.length, 1, JSON.stringify(stale));
      assert.equal(stale[0].pid, outcome.pid);
      assert.equal(stale[0].requestId, 'dead-1');
      assert.equal(stale[0].operation, 'checkpoint');
      assert.equal(stale[0].phase, 'checkpointing');
      assert.equal(stale[0].cgroup, cgroup.path);
      assert.equal(stale[0].hierarchy, hierarchy);
      assert.equal(stale[0].lockFile, lockFile);

      // The dead holder's record does not make a later holder's lock look like its checkpoint.
      const tool = await holdWithShellTool(lab, lockFile);
      try {
        const underTool = control.status(ref);
        assert.deepEqual([underTool.state, underTool.locked, underTool.holder], ['FROZEN', true, undefined]);
        assert.throws(
          () => beginCheckpoint(control, ref, { requestId: 'while-tool' }),
          (err: unknown) => /another process holds its lock/.test((err as Error).message),
        );
      } finally {
        await killAndWait(tool);
      }

      // A new agent takes over at once.
      const hold = beginCheckpoint(control, ref, { requestId: 'after-crash' });
      try {
        assert.deepEqual(control.staleLocks(), [], 'a held lock is not stale');
        assert.throws(
          () => control.forget(ref),
          (err: unknown) => (err as { code?: string }).code === 'EBUSY',
          'a held lock is never forgotten',
        );
        assert.equal((await hold.end()).consistent, true);
      } finally {
        hold.lease.release();
      }
      control.forget(ref);
      assert.equal(flockFree(lockFile), true);
      assert.deepEqual(control.staleLocks(), []);
    });

    test('two agent processes hammering take and release of one cgroup never hold it both, and leave no lock file', async (t) => {
      const cgroup = lab.cgroup(hierarchy, 'hammer');
      const control = makeControl(lab);
      mkdirSync(control.locksDir, { recursive: true, mode: 0o700 });
      const shared = join(lab.tempDir('hammer'), 'inside');
      writeFileSync(shared, '');
      const children = ['a', 'b'].map((name) =>
        lab.spawn(
          process.execPath,
          [CONTENDER, control.runDir, hierarchy, cgroup.path, `hammer-${name}`, 'hammer', String(HAMMER_QUOTA), shared, '2'],
          {
            stdio: ['pipe', 'pipe', 'inherit'],
          },
        ),
      );
      const readers = children.map(jsonLines);
      for (const next of readers) assert.deepEqual(await withTimeout(next(), 30_000, 'hammer starting'), { ready: true });
      for (const child of children) child.stdin!.write('go\n');
      const results = (await withTimeout(Promise.all(readers.map((next) => next())), 120_000, 'hammering')) as unknown as HammerCounts[];
      await Promise.all(children.map(exited));
      for (const r of results) {
        assert.deepEqual(r.errors, [], `pid ${r.pid}: no error other than EBUSY (${r.errors.length}: ${r.errors.slice(0, 2).join('; ')})`);
        assert.equal(r.won + r.refused, r.rounds, `pid ${r.pid}: every round took the lock or was refused`);
        assert.ok(r.won >= HAMMER_QUOTA, `pid ${r.pid} took the lock ${r.won} times`);
        assert.ok(r.refused >= HAMMER_QUOTA, `pid ${r.pid} was refused ${r.refused} times`);
        assert.equal(r.overlaps, 0, `pid ${r.pid} was never inside together with the other`);
        assert.equal(r.foreignRecords, 0, `pid ${r.pid}: the file at the lock's path always was the one it held`);
      }
      t.diagnostic(
        `rounds ${results.map((r) => r.rounds).join(' + ')}; won ${results.map((r) => r.won).join(' + ')}, refused ${results.map((r) => r.refused).join(' + ')}`,
      );
      assert.deepEqual(readdirSync(control.locksDir), [], 'no lock file left');
    });

    test('7. `flock -n LOCKFILE true` fails while the lock is held and succeeds after release', async () => {
      const cgroup = lab.cgroup(hierarchy, 'flock');
      const control = makeControl(lab);
      const ref = refOf(cgroup);
      const lease = control.lease(ref, { requestId: 'f1', operation: 'freeze' });
      const lockFile = control.lockPath(ref);
      try {
        assert.equal(flockFree(lockFile), false);
      } finally {
        lease.release();
      }
      assert.equal(flockFree(lockFile), true);

      // And the other way round: a shell tool holding it makes agentd refuse, naming the lock file.
      const tool = await holdWithShellTool(lab, lockFile);
      try {
        assert.equal(control.status(ref).locked, true);
        await assert.rejects(control.freeze(ref), (err: unknown) => {
          assert.equal((err as { code?: string }).code, 'EBUSY');
          assert.match(
            (err as Error).message,
            new RegExp(`another process holds its lock ${lockFile.replace(/[.*+?^${}()|[\]\\%]/g, '\\$&')}`),
          );
          return true;
        });
        assert.equal(kernelState(cgroup), 'THAWED', 'the refused freeze changed nothing');
      } finally {
        await killAndWait(tool);
      }
      assert.equal(flockFree(lockFile), true, 'the tool is gone and so is its lock');
    });
  });
}
