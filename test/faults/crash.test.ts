// Crash safety: a real agentd is SIGKILLed in the middle of checkpoints of real workloads, at random
// delays and at every progress stage from freeze to the final policy. After each kill: the lock is
// free, every process is alive, the cgroup is FROZEN or in its prior state (never FREEZING), and the
// image directory holds only verified images or plainly unfinished ones. A new agentd on the same
// directories reports what it found, returns the cgroup to its prior state and removes `.partial-*`.
//
// What must happen to an orphaned CRIU (runCriu starts CRIU in a session of its own, so agentd's
// SIGKILL does not reach it): it is left to finish on its own, and puts the cgroup back to FROZEN
// as it found it (the image it writes is never published: nobody is left to write its manifest).
// A restarted agentd must not touch the cgroup while that CRIU still works on it (else CRIU
// re-freezes it after recovery thawed it, and nobody thaws it again): it waits for it, and kills
// it if it has not finished within a grace period (a hung CRIU). The workload survives either way.

import { before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync, readdirSync } from 'node:fs';
import { join } from 'node:path';
import { Agent, FAULT_FIXTURES, sleep, type StreamReply } from './agent.js';
import {
  assertWorkloadIntact,
  auditImages,
  checkMemory,
  criuProcessesUnder,
  flockFree,
  lockFileOf,
  lockRecord,
  lostProcesses,
  prng,
  seedFromEnv,
  setKernel,
  settledState,
  startWorkload,
  waitNoCriu,
  running,
  whenTracedCriuRuns,
  type TracedCriu,
  type Workload,
} from './checks.js';
import { FaultSuite } from './suite.js';
import { CriuPlan, STRACED_CRIU } from '../helpers/criu-injection.js';
import { findCriu } from '../../src/criu/index.js';

const suite = new FaultSuite('faults-crash');
const { lab, figures, hierarchies } = suite;

/**
 * An agentd whose CRIU (the real one under strace, test/helpers/criu-injection.ts) is parked for 3 s
 * at the first ptrace call of the second tree's dump, before it seizes anything (harmless,
 * docs/criu-faults.md): the tests that kill agentd while that CRIU runs then find it running every
 * time, whatever the load (a small tree's dump can otherwise end before the kill lands).
 */
async function parkedAgent(dirs: ReturnType<typeof suite.agentDirs>, name: string): Promise<Agent> {
  const plan = new CriuPlan(join(lab.tempDir(`plan-${name}`), 'plan'));
  plan.set('-', 'inject:delay_enter=3000000:when=1');
  return Agent.start(lab, dirs, { criu: STRACED_CRIU, env: plan.env((await findCriu()).path) });
}
/** Why no orphaned CRIU was found, for the assertion's message. */
function orphanProblem(orphan: TracedCriu | undefined, reply: StreamReply, agent: Agent): string {
  const stages = reply.progress.map((e) => (e.tree ? `${e.stage} ${e.tree}/${e.trees}` : e.stage)).join(', ');
  const what = orphan ? `CRIU ${orphan.criu} (traced by ${orphan.tracer}) was gone right after the kill` : 'no traced CRIU dumped tree-1';
  return `${what}; progress: ${stages}; final: ${JSON.stringify(reply.final)}; agentd's log:\n${agent.log}`;
}
const MIN_KILLS_IN_WINDOW = 20;
const MIN_RUNS = 24;
const MAX_RUNS = 40;
// The stages a kill is aimed at, in order. The kill lands a little after agentd reported the stage
// (the line has to reach us), which is also what a crash at a random moment looks like.
const STAGES = ['freeze', 'lock', 'dump-first', 'dump-second', 'dump-end', 'verify', 'manifest', 'policy', 'release'] as const;
// Progress lines reach the client in bursts (agentd writes them between synchronous steps), so
// the short phases (the freeze itself, the policy) are also aimed at by watching the lock file's
// record, which agentd rewrites synchronously as each phase begins.
const PHASES = ['freezing', 'after-'] as const;
type Trigger = (typeof STAGES)[number] | 'delay' | `phase ${(typeof PHASES)[number]}`;

function triggerFor(run: number, random: () => number): Trigger {
  const round = Math.floor(run / 4);
  switch (run % 4) {
    case 2:
      return 'delay';
    case 3:
      return `phase ${PHASES[round % PHASES.length]}`;
    default:
      return STAGES[(2 * round + (run % 4)) % STAGES.length] ?? STAGES[Math.floor(random() * STAGES.length)];
  }
}

/** Spins on the lock file until its record's phase starts with `prefix`, then calls `then`. Stops with `until`. */
function onPhase(lockFile: string, prefix: string, then: () => void, until: Promise<unknown>): void {
  let over = false;
  void until.finally(() => (over = true));
  const look = () => {
    if (over) return;
    if ((lockRecord(lockFile)?.phase as string | undefined)?.startsWith(prefix)) return then();
    setImmediate(look);
  };
  look();
}

/**
 * Whether a progress event is the one a kill is aimed at. Dump events come in pairs per tree (start,
 * end) and carry the bytes written so far by all trees, so the nth dump event says where CRIU is.
 */
function matches(trigger: Trigger, e: StreamReply['progress'][number], dumpEvents: number): boolean {
  switch (trigger) {
    case 'dump-first':
      return e.stage === 'dump' && dumpEvents === 1;
    case 'dump-second':
      return e.stage === 'dump' && dumpEvents === 3;
    case 'dump-end':
      return e.stage === 'dump' && dumpEvents === 2 * (e.trees ?? 1);
    case 'delay':
      return false;
    default:
      return e.stage === trigger;
  }
}

/** Phases of the lock record that mean the kill landed between freeze and the final policy. */
function inWindow(phase: string | undefined): boolean {
  return phase !== undefined && phase !== 'started' && phase !== 'finished';
}

/**
 * What a restarted agentd must have made of the cgroup: its prior state, or the policy when the
 * image was published, or THAWED when the kill came after an `--after thawed` checkpoint had
 * thawed the workload (the lock's phase `after-thawed`): the image is published after that thaw
 * (docs/freezer.md, "The image after the thaw"), and a failure then leaves the workload running.
 */
function acceptableAfterRecovery(prior: 'THAWED' | 'FROZEN', afterPolicy: string, published: boolean, phase?: string): string[] {
  const states = [prior];
  if (published) states.push(afterPolicy === 'thawed' ? 'THAWED' : afterPolicy === 'frozen' ? 'FROZEN' : prior);
  if (afterPolicy === 'thawed' && phase === 'after-thawed') states.push('THAWED');
  return states;
}

describe('agentd SIGKILLed mid-checkpoint', { skip: hierarchies.length === 0 && 'no freezer hierarchy' }, () => {
  const workloads: Workload[] = [];
  before(async () => {
    for (const h of hierarchies) workloads.push(await startWorkload(lab, h, `crash-${h}`, { children: 1, memoryMiB: 24 }));
  });

  test(`at least ${MIN_KILLS_IN_WINDOW} kills between freeze and the final policy, v1 and v2, then recovery by a new agentd`, async (t) => {
    const seed = seedFromEnv();
    t.diagnostic(`seed ${seed} (FAULT_SEED=${seed} replays the same choices)`);
    const random = prng(seed);
    const dirs = suite.agentDirs('crash');
    const phases = new Map<string, number>();
    let orphansSeen = 0;
    let killsInWindow = 0;
    let typicalMs = 1500;
    let agent = await Agent.start(lab, dirs);
    const problems: string[] = [];

    for (let run = 0; run < MAX_RUNS && (killsInWindow < MIN_KILLS_IN_WINDOW || run < MIN_RUNS); run++) {
      const w = workloads[Math.floor(random() * workloads.length)];
      const prior: 'THAWED' | 'FROZEN' = random() < 0.3 ? 'FROZEN' : 'THAWED';
      const afterPolicy = ['prior', 'prior', 'thawed', 'frozen'][Math.floor(random() * 4)];
      const trigger = triggerFor(run, random);
      const delay = trigger === 'delay' ? Math.floor(random() * typicalMs) : trigger.startsWith('phase') ? 0 : Math.floor(random() * 15);
      const restartAtOnce = run % 2 === 1;
      const label = `run ${run} (${w.cgroup.hierarchy}, prior ${prior}, after ${afterPolicy}, kill at ${trigger}+${delay} ms, restart ${restartAtOnce ? 'at once' : 'after the orphan'})`;
      await setKernel(w.cgroup, prior);
      const lockFile = lockFileOf(dirs.runDir, w.cgroup);

      let killing: Promise<void> | undefined;
      const kill = () => (killing ??= sleep(delay).then(() => agent.kill()));
      const started = Date.now();
      if (trigger === 'delay') void kill();
      let dumpEvents = 0;
      const streaming = agent.stream(
        '/v1/checkpoints',
        { cgroup: w.cgroup.path, hierarchy: w.cgroup.hierarchy, after: afterPolicy },
        (e) => {
          if (e.stage === 'dump') dumpEvents++;
          if (matches(trigger, e, dumpEvents)) void kill();
        },
      );
      if (trigger.startsWith('phase ')) onPhase(lockFile, trigger.slice('phase '.length), () => void kill(), streaming);
      const reply = await streaming;
      if (reply.final?.type === 'result') typicalMs = Math.max(300, Date.now() - started);
      await kill(); // also when the checkpoint ended first: agentd dies after its final policy then
      figures.runs++;
      figures.faults++;
      const record = lockRecord(lockFile);
      const phase = record?.phase as string | undefined;
      phases.set(phase ?? 'none', (phases.get(phase ?? 'none') ?? 0) + 1);
      if (inWindow(phase)) killsInWindow++;
      const orphans = criuProcessesUnder(dirs.imagesDir);
      if (orphans.length) orphansSeen++;

      if (!restartAtOnce) {
        // The orphaned CRIU, if any, finishes on its own; then the state must already be acceptable.
        const left = await waitNoCriu(dirs.imagesDir, 60_000);
        if (left.length) problems.push(`${label}: CRIU ${left.join(',')} still running 60 s after the kill`);
        if (!flockFree(lockFile)) problems.push(`${label}: the lock is held after the kill`);
        const state = await settledState(w.cgroup);
        const acceptable = ['FROZEN', ...acceptableAfterRecovery(prior, afterPolicy, auditImages(dirs.imagesDir).good.length > 0, phase)];
        if (!acceptable.includes(state)) {
          problems.push(`${label}: after the kill (phase ${phase}) the cgroup is ${state}, not ${[...new Set(acceptable)].join(' or ')}`);
          figures.cgroupsLeftWrong++;
        }
        const lost = lostProcesses(w);
        if (lost.length) problems.push(`${label}: processes lost after the kill: ${lost.join(', ')}`);
        const audit = auditImages(dirs.imagesDir);
        if (audit.bad.length) problems.push(`${label}: images that look good but are not: ${audit.bad.join('; ')}`);
      }
      const partialsBefore = auditImages(dirs.imagesDir).partial;
      const published = auditImages(dirs.imagesDir).good;

      agent = await Agent.start(lab, dirs);
      const left = criuProcessesUnder(dirs.imagesDir);
      if (left.length) problems.push(`${label}: the new agentd is serving while CRIU ${left.join(',')} still works on the cgroup`);
      if (!flockFree(lockFile)) problems.push(`${label}: the lock is held after recovery`);
      if (record && record.phase !== 'finished' && !agent.log.includes(`cgroup=${w.cgroup.path} `)) {
        problems.push(`${label}: the new agentd did not report the interrupted checkpoint (phase ${record.phase}):\n${agent.log}`);
      }
      for (const partial of partialsBefore) {
        if (!agent.log.includes(partial)) problems.push(`${label}: the new agentd did not report removing ${partial}`);
      }
      const audit = auditImages(dirs.imagesDir);
      if (audit.partial.length) problems.push(`${label}: temporary image directories left after recovery: ${audit.partial.join(', ')}`);
      if (audit.bad.length) problems.push(`${label}: images that look good but are not: ${audit.bad.join('; ')}`);
      const state = await settledState(w.cgroup);
      const acceptable = acceptableAfterRecovery(prior, afterPolicy, published.length > 0, phase);
      if (!acceptable.includes(state)) {
        problems.push(
          `${label}: after recovery the cgroup is ${state}, expected ${acceptable.join(' or ')} (lock phase at the kill: ${phase})`,
        );
        figures.cgroupsLeftWrong++;
      }
      const intact = await assertWorkloadIntact(w, state === 'THAWED');
      problems.push(...intact.map((p) => `${label}: ${p}`));
      figures.processesLost += lostProcesses(w).length;
      if (run % 4 === 0 && state === 'THAWED') {
        const memory = await checkMemory(w);
        if (!memory.startsWith('ok')) problems.push(`${label}: memory of the workload after recovery: ${memory}`);
      }
      // Published images were verified above; drop them so the disk does not fill up.
      for (const id of audit.good) await agent.request('DELETE', `/v1/checkpoints/${id}`);
      for (const name of audit.failed) await agent.request('DELETE', `/v1/checkpoints/${name.replace(/\.failed$/, '')}`);
      t.diagnostic(
        `${label}: lock phase at the kill ${phase ?? 'none'}, ${orphans.length ? 'CRIU orphaned' : 'no CRIU running'}, after recovery ${state}`,
      );
      if (problems.length > 20) break;
    }
    assert.equal(await agent.stop(), 0, 'the last agentd stops cleanly');
    for (const w of workloads) await setKernel(w.cgroup, 'THAWED');
    const histogram = [...phases].map(([p, n]) => `${p} ${n}`).join(', ');
    figures.notes.push(`lock phases at the kills: ${histogram}`, `${orphansSeen} kills orphaned a running CRIU`);
    t.diagnostic(`kills between freeze and the final policy: ${killsInWindow}; phases: ${histogram}; orphaned CRIUs: ${orphansSeen}`);
    assert.deepEqual(problems, []);
    assert.ok(killsInWindow >= MIN_KILLS_IN_WINDOW, `only ${killsInWindow} kills landed between freeze and the final policy`);
  });

  test('an orphaned CRIU finishes on its own: the cgroup ends FROZEN, nothing is lost, and a restart puts it back', async (t) => {
    const w = workloads[0];
    const dirs = suite.agentDirs('orphan-finishes');
    const agent = await parkedAgent(dirs, 'orphan-finishes');
    const realCriu = (await findCriu()).path;
    await setKernel(w.cgroup, 'THAWED');
    let killing: Promise<TracedCriu | undefined> | undefined;
    const reply = await agent.stream('/v1/checkpoints', { cgroup: w.cgroup.path, hierarchy: w.cgroup.hierarchy }, (e) => {
      if (e.stage === 'dump' && e.tree === 2) {
        killing ??= whenTracedCriuRuns(realCriu, dirs.imagesDir, 'tree-1').then(async (found) => (await agent.kill(), found));
      }
    });
    const orphan = await killing;
    await agent.kill();
    figures.runs++;
    figures.faults++;
    assert.ok(orphan && running(orphan.criu), `agentd died while its CRIU was dumping (${orphanProblem(orphan, reply, agent)})`);
    const orphans = [orphan.criu];
    assert.deepEqual(await waitNoCriu(dirs.imagesDir, 60_000), [], 'the orphaned CRIU ends by itself');
    const [partial] = auditImages(dirs.imagesDir).partial;
    assert.ok(partial, 'the unfinished image stays under a temporary name');
    // The trees' directories (beside them: cpuinfo.img and its log, src/checkpoint/compat.ts).
    const logs = readdirSync(join(dirs.imagesDir, partial))
      .filter((name) => name.startsWith('tree-'))
      .map((tree) => readFileSync(join(dirs.imagesDir, partial, tree, 'dump.log'), 'utf8'));
    assert.match(logs.at(-1)!, /Dumping finished successfully/, 'the orphan completed its dump');
    assert.equal(await settledState(w.cgroup), 'FROZEN', 'CRIU put the cgroup back to FROZEN, as it found it');
    assert.deepEqual(lostProcesses(w), []);
    assert.ok(flockFree(lockFileOf(dirs.runDir, w.cgroup)));

    const next = await Agent.start(lab, dirs);
    assert.match(next.log, /recovered a cgroup an interrupted checkpoint left.*returned to its prior state THAWED/);
    assert.match(next.log, new RegExp(`removed a temporary image directory.*${partial}`));
    assert.equal(await settledState(w.cgroup), 'THAWED');
    assert.deepEqual(await assertWorkloadIntact(w, true), []);
    assert.match(await checkMemory(w), /^ok/);
    assert.equal(await next.stop(), 0);
    t.diagnostic(`orphaned CRIU ${orphans.join(',')} finished its dump; the restart thawed the cgroup and removed ${partial}`);
  });

  test('agentd restarted while its orphaned CRIU still dumps: recovery waits for it, then returns the cgroup to its prior state', async (t) => {
    const w = workloads[workloads.length - 1];
    const dirs = suite.agentDirs('orphan-restart');
    const agent = await parkedAgent(dirs, 'orphan-restart');
    const realCriu = (await findCriu()).path;
    await setKernel(w.cgroup, 'THAWED');
    // The orphan is held with SIGSTOP (as a slow dump of a big workload would hold it) while the
    // new agentd starts, then let go: a CRIU that outlives the new agent's start, every time.
    // Its tracer is stopped, not CRIU: strace holds CRIU at its next ptrace call until it is let go.
    let killing: Promise<TracedCriu | undefined> | undefined;
    const reply = await agent.stream('/v1/checkpoints', { cgroup: w.cgroup.path, hierarchy: w.cgroup.hierarchy }, (e) => {
      if (e.stage === 'dump' && e.tree === 2) {
        killing ??= whenTracedCriuRuns(realCriu, dirs.imagesDir, 'tree-1').then(async (found) => {
          await agent.kill();
          if (found) process.kill(found.tracer, 'SIGSTOP');
          return found;
        });
      }
    });
    const orphan = await killing;
    await agent.kill();
    figures.runs++;
    figures.faults++;
    assert.ok(orphan && running(orphan.criu), `agentd died while its CRIU was dumping (${orphanProblem(orphan, reply, agent)})`);
    const stopped = [orphan.tracer];
    const next = Agent.spawn(lab, dirs);
    // Recovery runs right after the CRIU probe: let the orphan go on only once recovery could have begun.
    await next.waitLog(/CRIU found|no usable CRIU/, 60_000);
    await sleep(300);
    for (const pid of stopped) {
      try {
        process.kill(pid, 'SIGCONT');
      } catch {
        // ended meanwhile
      }
    }
    await next.waitReady();
    const workingAtReady = criuProcessesUnder(dirs.imagesDir);
    assert.deepEqual(await waitNoCriu(dirs.imagesDir, 30_000), []);
    assert.equal(
      await settledState(w.cgroup),
      'THAWED',
      'back to its prior state once every CRIU is gone (nothing re-froze it behind the new agentd)',
    );
    assert.deepEqual(workingAtReady, [], 'no CRIU works on the cgroup once the new agentd serves');
    assert.deepEqual(auditImages(dirs.imagesDir).partial, []);
    assert.deepEqual(await assertWorkloadIntact(w, true), []);
    assert.match(await checkMemory(w), /^ok/);
    assert.equal(await next.stop(), 0);
    t.diagnostic(
      `recovery log:\n${next.log
        .split('\n')
        .filter((l) => /recover|removed|CRIU/.test(l))
        .join('\n')}`,
    );
  });

  test('a hung orphan (a stand-in CRIU that never returns) is killed by the restarted agentd, and the workload runs again', async (t) => {
    // The real CRIU cannot be made to hang on demand; fixtures/faults/fake-criu.sh answers
    // --version and check like CRIU 4.1.1, then sleeps forever in `dump`.
    const w = workloads[0];
    const dirs = suite.agentDirs('orphan-hung');
    const criu = join(FAULT_FIXTURES, 'fake-criu.sh');
    const env = { FAKE_CRIU_DUMP: 'hang' };
    const agent = await Agent.start(lab, dirs, { criu, env });
    await setKernel(w.cgroup, 'THAWED');
    await agent.stream('/v1/checkpoints', { cgroup: w.cgroup.path, hierarchy: w.cgroup.hierarchy }, (e) => {
      if (e.stage === 'dump') void sleep(200).then(() => agent.kill());
    });
    await agent.kill();
    figures.runs++;
    figures.faults += 2;
    const orphans = criuProcessesUnder(dirs.imagesDir);
    assert.ok(orphans.length > 0, 'the stand-in CRIU outlived agentd');
    assert.equal(await settledState(w.cgroup), 'FROZEN', 'agentd froze the cgroup before it died');
    assert.ok(flockFree(lockFileOf(dirs.runDir, w.cgroup)), 'the lock died with agentd');
    const startedAt = Date.now();
    const next = await Agent.start(lab, dirs, { criu, env });
    assert.deepEqual(criuProcessesUnder(dirs.imagesDir), [], 'the hung CRIU was killed');
    assert.equal(await settledState(w.cgroup), 'THAWED');
    assert.deepEqual(await assertWorkloadIntact(w, true), []);
    assert.deepEqual(auditImages(dirs.imagesDir).partial, []);
    assert.match(next.log, /killed/i);
    assert.equal(await next.stop(), 0);
    t.diagnostic(`the restarted agentd took ${Date.now() - startedAt} ms to deal with the hung orphan ${orphans.join(',')}`);
  });

  test('figures', (t) => {
    t.diagnostic(figures.line('crash safety'));
    assert.equal(figures.processesLost, 0);
    assert.equal(figures.cgroupsLeftWrong, 0);
  });
});
