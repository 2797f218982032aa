// Races: 20 checkpoints of one cgroup fired at the same instant from 20 agentctl processes through
// two agentds on the same run directory (exactly one wins, the rest EBUSY); 50 thaws and freezes
// fired during a checkpoint (all EBUSY, and the cgroup verifiably stays stopped: the kernel state,
// who traces the tasks and a counter are sampled throughout); flock(1) from a shell fails while a
// checkpoint holds the lock; a cgroup whose processes fork all the time is either dumped whole or
// fails cleanly, back in its prior state.

import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { processState, waitUntil, workload } from '../helpers/lab.js';
import { Agent, AGENTCTL, type Reply } from './agent.js';
import {
  assertWorkloadIntact,
  auditImages,
  counterValue,
  flockFree,
  kernelState,
  lockFileOf,
  lostProcesses,
  setKernel,
  settledState,
  startWorkload,
} from './checks.js';
import { Gate } from './gate.js';
import { CriuPlan, STRACED_CRIU } from '../helpers/criu-injection.js';
import { findCriu } from '../../src/criu/index.js';
import { FaultSuite } from './suite.js';
import type { Json } from '../helpers/json.js';

const suite = new FaultSuite('faults-races');
const { lab, figures, hierarchies } = suite;
const gates: Gate[] = [];
suite.onCleanup(async () => {
  for (const gate of gates) await gate.close();
}, 'before-agents');

/** Runs a command to its end (tracked by the lab, so a stuck one is killed at cleanup). */
function run(command: string, args: string[]): Promise<{ code: number | null; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    const child = lab.spawn(command, args, { stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout!.on('data', (c) => (stdout += c));
    child.stderr!.on('data', (c) => (stderr += c));
    // 'close', not 'exit': the exit can be seen before the last of stderr is read (2 of 19 EBUSY
    // messages were missing once, on a loaded machine).
    child.on('close', (code) => resolve({ code, stdout, stderr }));
  });
}

/** The tracer of a process (CRIU while it holds the task by ptrace), 0 when none. */
function tracerOf(pid: number): number {
  try {
    return Number(/^TracerPid:\s+(\d+)/m.exec(readFileSync(`/proc/${pid}/status`, 'utf8'))?.[1] ?? 0);
  } catch {
    return -1;
  }
}

describe('races', { skip: hierarchies.length === 0 && 'no freezer hierarchy' }, () => {
  for (const h of hierarchies) {
    test(`${h}: 20 agentctl checkpoints of one cgroup at the same instant, through two agentds on one run dir: exactly one wins, 19 EBUSY`, async (t) => {
      const w = await startWorkload(lab, h, `race-${h}`, { children: 1, memoryMiB: 24 });
      const dirs = suite.agentDirs(`race-${h}`);
      const a = await Agent.start(lab, dirs);
      const b = await Agent.start(lab, { ...dirs, socket: join(dirs.socket, '..', 'second.sock') });
      // Each agentd checks CRIU once, at its first checkpoint: do that now, on an empty cgroup (ESRCH),
      // so the race is about the lock and not about which agent finished `criu check` first.
      const empty = lab.cgroup(h, `race-empty-${h}`);
      for (const agent of [a, b]) {
        const warm = await agent.request('POST', '/v1/checkpoints', { cgroup: empty.path, hierarchy: h });
        assert.equal(warm.json?.error?.code, 'ESRCH', warm.text);
      }
      const gate = new Gate(join(dirs.socket, '..', 'gate.sock'), [a.socket, b.socket], 20);
      gates.push(gate);
      await gate.listen();
      const contenders = Array.from({ length: 20 }, () =>
        run(process.execPath, [AGENTCTL, 'checkpoint', w.cgroup.path, '--hierarchy', h, '--json', '--socket', gate.path]),
      );
      const results = await Promise.all(contenders);
      figures.runs++;
      figures.requests += 20;
      const winners = results.filter((r) => r.code === 0);
      const busy = results.filter((r) => r.code === 4 && /^agentctl: EBUSY: cgroup v[12]:\S+ is (CHECKPOINTING|busy)/.test(r.stderr));
      const others = results.filter((r) => !winners.includes(r) && !busy.includes(r)).map((r) => `exit ${r.code}: ${r.stderr.trim()}`);
      assert.deepEqual(others, [], 'every loser says EBUSY (exit 4)');
      assert.equal(winners.length, 1, 'exactly one checkpoint wins');
      assert.equal(busy.length, 19);
      const summary = JSON.parse(winners[0].stdout);
      assert.deepEqual(
        auditImages(dirs.imagesDir),
        { good: [summary.id], partial: [], failed: [], bad: [] },
        'one image, complete and verified',
      );
      assert.equal(await settledState(w.cgroup), 'THAWED');
      assert.ok(flockFree(lockFileOf(dirs.runDir, w.cgroup)));
      assert.deepEqual(await assertWorkloadIntact(w, true), []);
      figures.processesLost += lostProcesses(w).length;
      const holders = new Set(busy.map((r) => /request ([\w-]+)/.exec(r.stderr)?.[1]).filter(Boolean));
      t.diagnostic(`winner ${summary.id}; the 19 refusals named ${holders.size} holder request(s): ${[...holders].join(', ')}`);
      assert.equal(await a.stop(), 0);
      assert.equal(await b.stop(), 0);
    });
  }

  for (const h of hierarchies) {
    test(`${h}: 50 thaws and freezes fired during a checkpoint: all EBUSY, flock -n fails, and the cgroup never runs`, async (t) => {
      const w0 = await startWorkload(lab, h, `storm-${h}`, { children: 1, memoryMiB: 96 });
      // A second counting tree: CRIU dumps one tree at a time, and the other trees must not run either.
      const second = lab.tempDir('storm-second');
      lab.spawnIn(w0.cgroup, workload('counter-tree.pl'), [second, '0']);
      await waitUntil('the second tree to count', () => counterValue(join(second, 'root')) > 0);
      const w = { ...w0, pids: lab.pidsOf(w0.cgroup), counters: [...w0.counters, join(second, 'root')] };
      const dirs = suite.agentDirs(`storm-${h}`);
      // CRIU is parked 10 s at its first ptrace call (strace), before it seizes anything: the
      // checkpoint lasts until every request has had its answer, however fast the dump itself is
      // (a 96 MiB dump with its hashing done during the dump ended before the requests arrived).
      const plan = new CriuPlan(join(lab.tempDir(`plan-storm-${h}`), 'plan'));
      plan.set('-', 'inject:delay_enter=10000000:when=1');
      const agent = await Agent.start(lab, dirs, { criu: STRACED_CRIU, env: plan.env((await findCriu()).path) });
      const lockFile = lockFileOf(dirs.runDir, w.cgroup);
      // A sample reads several files one after the other: the kernel state is read before and after the
      // tasks, so a freeze written by CRIU between two reads is not mistaken for a running task.
      const samples: { at: number; kernel: string; kernelAfter: string; counters: number[]; tracers: number[]; states: string[] }[] = [];
      let sampling = false;
      const sample = () => {
        if (!sampling) return;
        const kernel = kernelState(w.cgroup);
        const counters = w.counters.map(counterValue);
        const tracers = w.pids.map(tracerOf);
        const states = w.pids.map((pid) => processState(pid) ?? '?');
        samples.push({ at: Date.now(), kernel, counters, tracers, states, kernelAfter: kernelState(w.cgroup) });
        setImmediate(sample);
      };
      let storm: Promise<Reply[]> | undefined;
      let flockDuring: Promise<number | null> | undefined;
      let stateDuring: Promise<Reply> | undefined;
      const body = { cgroup: w.cgroup.path, hierarchy: h };
      const reply = await agent.stream('/v1/checkpoints', { ...body, after: 'frozen' }, (e) => {
        if (e.stage !== 'lock' || storm) return;
        sampling = true;
        sample();
        storm = Promise.all(
          Array.from({ length: 50 }, (_, i) => agent.request('POST', i % 2 ? '/v1/cgroups/freeze' : '/v1/cgroups/thaw', body)),
        );
        flockDuring = new Promise((resolve) =>
          execFile('sh', ['-c', `flock -n '${lockFile}' true`], (err) => resolve(err ? ((err as { code?: number }).code ?? -1) : 0)),
        );
        stateDuring = agent.request('GET', `/v1/cgroups/state?cgroup=${encodeURIComponent(w.cgroup.path)}&hierarchy=${h}`);
      });
      sampling = false;
      const endedAt = Date.now();
      figures.runs++;
      figures.requests += 50;
      assert.equal(reply.final?.type, 'result', JSON.stringify(reply.final));
      const replies = await storm!;
      const notBusy = replies.filter(
        (r) => r.status !== 409 || r.json?.error?.code !== 'EBUSY' || !/is CHECKPOINTING/.test(r.json.error.message),
      );
      assert.deepEqual(
        notBusy.map((r) => r.text),
        [],
        'every thaw and freeze got EBUSY naming CHECKPOINTING',
      );
      assert.equal(await flockDuring, 1, '`flock -n LOCKFILE true` from a shell fails during the checkpoint');
      const state = await stateDuring!;
      assert.equal(state.json?.state, 'CHECKPOINTING', state.text);

      // Stopped the whole time: the counters never moved, and whenever the kernel said THAWED (CRIU
      // thaws the freezer while it holds the tasks, docs/freezer.md, rule 7), every task was held by CRIU's ptrace
      // or stopped (a v1-frozen task sleeps in D, a ptrace-stopped one is t or T).
      assert.ok(samples.length > 20, `only ${samples.length} samples`);
      const first = samples[0].counters;
      const moved = samples.filter((s) => s.counters.some((c, i) => c !== first[i]));
      assert.deepEqual(moved.slice(0, 3), [], 'no counter moved while the checkpoint ran');
      const loose = (s: (typeof samples)[number]) => s.tracers.some((tr, i) => tr === 0 && !/[DTt]/.test(s.states[i]));
      const running = samples.filter((s) => s.kernel === 'THAWED' && s.kernelAfter === 'THAWED' && loose(s));
      assert.deepEqual(running.slice(0, 3), [], 'never thawed without CRIU holding every task');
      assert.equal(await settledState(w.cgroup), 'FROZEN', '--after frozen');
      assert.deepEqual(w.counters.map(counterValue), first, 'still stopped at the same counts after the checkpoint');
      const inCriu = samples.filter((s) => s.kernel !== 'FROZEN').length;
      t.diagnostic(
        `${samples.length} samples over ${endedAt - samples[0].at} ms, ${inCriu} of them inside CRIU's window (kernel THAWED, tasks traced by CRIU); 50 requests answered EBUSY`,
      );

      assert.ok(flockFree(lockFile), 'the lock is free after the checkpoint');
      const thawed = await agent.request('POST', '/v1/cgroups/thaw', body);
      assert.equal(thawed.status, 200, thawed.text);
      assert.deepEqual(await assertWorkloadIntact(w, true), []);
      figures.processesLost += lostProcesses(w).length;
      assert.equal(auditImages(dirs.imagesDir).good.length, 1);
      assert.equal(await agent.stop(), 0);
    });
  }

  for (const h of hierarchies) {
    test(`${h}: a cgroup whose processes fork all the time: every checkpoint holds every process, or fails cleanly back to prior`, async (t) => {
      const cgroup = lab.cgroup(h, `forker-${h}`);
      lab.spawnIn(cgroup, workload('forker.sh'));
      const [root] = await lab.waitForProcesses(cgroup, 1);
      const dirs = suite.agentDirs(`forker-${h}`);
      const agent = await Agent.start(lab, dirs);
      const outcomes: string[] = [];
      for (let i = 0; i < 3; i++) {
        const prior = i === 2 ? 'FROZEN' : 'THAWED';
        await setKernel(cgroup, prior);
        const reply = await agent.request('POST', '/v1/checkpoints', {
          cgroup: cgroup.path,
          hierarchy: h,
          after: 'frozen',
          timeoutMs: 60_000,
        });
        figures.runs++;
        if (reply.status === 201) {
          // Still frozen (--after frozen): what is in the cgroup now is exactly what was dumped.
          const manifest = (await agent.request('GET', `/v1/checkpoints/${reply.json.id}`)).json;
          const saved = manifest.trees.flatMap((tr: Json) => tr.processes.map((p: Json) => p.pid)).sort();
          const present = lab.pidsOf(cgroup).sort();
          assert.deepEqual(
            present.filter((p) => !saved.includes(p)),
            [],
            `every process of the frozen cgroup is in image ${reply.json.id}`,
          );
          assert.equal(await settledState(cgroup), 'FROZEN');
          outcomes.push(`ok (${saved.length} processes)`);
        } else {
          assert.ok(['EINCONSISTENT', 'ECRIU', 'ETIMEDOUT'].includes(reply.json?.error?.code), reply.text);
          assert.equal(await settledState(cgroup), prior, `a failed checkpoint puts the cgroup back to ${prior}`);
          outcomes.push(`${reply.json.error.code}: ${reply.json.error.message.slice(0, 120)}`);
        }
        assert.ok(flockFree(lockFileOf(dirs.runDir, cgroup)));
        const audit = auditImages(dirs.imagesDir);
        assert.deepEqual([audit.bad, audit.partial], [[], []]);
        await setKernel(cgroup, 'THAWED');
        assert.ok(lab.pidsOf(cgroup).includes(root), 'the forker itself is alive');
        if (prior === 'THAWED') {
          const before = lab.pidsOf(cgroup).join();
          await waitUntil('the forker to fork again', () => lab.pidsOf(cgroup).join() !== before, 5000);
        }
      }
      t.diagnostic(`${h}: ${outcomes.join('; ')}`);
      assert.equal(await agent.stop(), 0);
    });
  }

  test('a second agentd started on the same directories while a checkpoint runs leaves that checkpoint alone', async (t) => {
    // Its recovery looks for what a crashed agent left: a lock nobody holds, a .partial-* directory.
    // The running checkpoint's lock is held and its .partial-* directory is being written: not leftovers.
    const h = hierarchies[0];
    const w = await startWorkload(lab, h, 'second-agent', { children: 1, memoryMiB: 96 });
    const dirs = suite.agentDirs('second-agent');
    const first = await Agent.start(lab, dirs);
    let second: Promise<Agent> | undefined;
    const reply = await first.stream('/v1/checkpoints', { cgroup: w.cgroup.path, hierarchy: h }, (e) => {
      if (e.stage === 'dump' && e.tree === 2) second ??= Agent.start(lab, { ...dirs, socket: join(dirs.socket, '..', 'second.sock') });
    });
    const other = await second!;
    figures.runs++;
    assert.equal(reply.final?.type, 'result', `the first agentd's checkpoint went through: ${JSON.stringify(reply.final)}`);
    assert.doesNotMatch(other.log, /recovered a cgroup|removed a temporary image directory/, 'the second agentd found nothing to recover');
    assert.deepEqual(auditImages(dirs.imagesDir), { good: [reply.final.result.id], partial: [], failed: [], bad: [] });
    assert.equal(await settledState(w.cgroup), 'THAWED');
    assert.deepEqual(await assertWorkloadIntact(w, true), []);
    assert.equal(await other.stop(), 0);
    assert.equal(await first.stop(), 0);
    t.diagnostic(`the second agentd started during the dump and left checkpoint ${reply.final.result.id} alone`);
  });

  test('figures', (t) => {
    t.diagnostic(figures.line('races'));
    assert.equal(figures.processesLost, 0);
    assert.equal(figures.cgroupsLeftWrong, 0);
  });
});
