// The operator's view of a real agentd (bin/agentctl, real cgroups, the real CRIU): what runs now and
// cancelling it (agentctl operations, cancel), states that agree with the answers in every phase of a
// checkpoint that can be held still (CRIU parked by strace at a known ptrace call, the lock held as
// the dump flow holds it while hashing), restores that honour the prior state, and failed attempts
// listed, shown and pruned.

import { test, describe, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { resolveCgroup } from '../../src/cgroup/index.js';
import { Checkpointer } from '../../src/checkpoint/index.js';
import { claimCheckpoint } from '../../src/checkpoint/in-use.js';
import { parseDuration } from '../../src/cli/commands/prune.js';
import { findCriu } from '../../src/criu/index.js';
import { CgroupControl } from '../../src/lock/index.js';
import { HIERARCHIES, Lab, unavailable, waitUntil, type TestCgroup } from '../helpers/lab.js';
import { CriuPlan, STRACED_CRIU, dumpMoments, parkedAtCall, readPtraceLog } from '../helpers/criu-injection.js';
import { counterValue, countingTree, waitForCount } from '../checkpoint/helpers.js';
import { agentctl, api, startAgent, type Agent, type CliResult } from '../daemon/agent.js';
import type { Json } from '../helpers/json.js';

const lab = new Lab('operator');
let agent: Agent;
let plan: CriuPlan;

before(async () => {
  // Every dump runs the real CRIU under strace (fixtures/faults/strace-criu.sh); a test that wants
  // CRIU parked or killed at a ptrace call says so in the plan, one line per dump; otherwise none.
  plan = new CriuPlan(join(lab.tempDir('plan'), 'plan'));
  agent = await startAgent(lab, { args: ['--criu', STRACED_CRIU], env: plan.env((await findCriu()).path) });
});
after(async () => {
  await agent?.stop();
  await lab.cleanup();
});

const ctl = (...args: string[]) => agentctl(['--socket', agent.socket, ...args]);

function ok(result: CliResult): string {
  assert.equal(result.code, 0, `exit ${result.code}: ${result.stderr}`);
  return result.stdout;
}

function failed(result: CliResult, code: string, exit: number, pattern?: RegExp): void {
  assert.equal(result.code, exit, `exit ${result.code}, stdout: ${result.stdout}, stderr: ${result.stderr}`);
  assert.match(result.stderr, new RegExp(`^agentctl: ${code}: \\S`), result.stderr);
  if (pattern) assert.match(result.stderr, pattern);
}

async function sleeper(hierarchy: 'v1' | 'v2', name: string): Promise<TestCgroup> {
  const cgroup = lab.cgroup(hierarchy, name);
  lab.spawnIn(cgroup, 'sleep', ['100000']);
  await lab.waitForProcesses(cgroup, 1);
  return cgroup;
}

async function state(cgroup: TestCgroup): Promise<Json> {
  const res = await api(agent.socket, 'GET', `/v1/cgroups/state?cgroup=${encodeURIComponent(cgroup.path)}&hierarchy=${cgroup.hierarchy}`);
  assert.equal(res.status, 200, res.text);
  return res.body;
}

function checkpointBody(cgroup: TestCgroup, extra: Record<string, unknown> = {}) {
  return { cgroup: cgroup.path, hierarchy: cgroup.hierarchy, ...extra };
}

/**
 * CRIU's ptrace calls in a dump of this cgroup, from a reference dump (deleted again). Not from the
 * task's first dump: that one made one more call than every later one here (a PTRACE_GETFPREGS
 * after the task's first parasite), so a park placed by it landed one call past its moment, after
 * the dump's last PTRACE_DETACH, and parked nothing.
 */
async function dumpMomentsOf(cgroup: TestCgroup) {
  const reference = join(lab.tempDir('reference'), 'ptrace.log');
  plan.set('-', `log:${reference}`);
  for (let i = 0; i < 2; i++) {
    const res = await api(agent.socket, 'POST', '/v1/checkpoints', { body: checkpointBody(cgroup) });
    assert.equal(res.status, 201, res.text);
    assert.equal((await api(agent.socket, 'DELETE', `/v1/checkpoints/${res.body.id}`)).status, 200);
  }
  return dumpMoments(readPtraceLog(reference));
}

test("durations for --older-than: units and sums; anything else is refused in the option's words", () => {
  assert.equal(parseDuration('90s'), 90_000);
  assert.equal(parseDuration('15m'), 900_000);
  assert.equal(parseDuration('1d12h'), 36 * 3_600_000);
  assert.equal(parseDuration('2w'), 14 * 86_400_000);
  assert.equal(parseDuration('0s'), 0);
  for (const bad of ['', '7', 'd', '1.5h', '-1d', '1y', '1h 30m'])
    assert.throws(() => parseDuration(bad), /--older-than takes a duration/, bad);
});

test("--help lists operations, cancel and prune, each with examples; cancel's example ids have the forms of real request ids", async () => {
  const top = await agentctl(['--help']);
  assert.equal(top.code, 0);
  for (const command of ['operations', 'cancel', 'prune']) {
    assert.match(top.stdout, new RegExp(`agentctl ${command}\\b`), command);
    const help = await agentctl([command, '--help']);
    assert.equal(help.code, 0, command);
    assert.match(help.stdout, /Examples:\n\s+agentctl /, `${command} --help has examples`);
  }
  const restore = (await agentctl(['restore', '--help'])).stdout;
  assert.match(restore, /--thawed/);
  assert.match(restore, /--frozen/);
  const cancel = (await agentctl(['cancel', '--help'])).stdout;
  // yargs wraps a long example across lines and columns: look for the ids among its words.
  const words = cancel.slice(cancel.indexOf('Examples:')).split(/\s+/);
  assert.ok(
    words.some((w) => /^agentctl-[0-9a-f]{12}$/.test(w)),
    `agentctl's own form (src/cli/cancel.ts): ${cancel}`,
  );
  assert.ok(
    words.some((w) => /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/.test(w)),
    `the agent's own (a UUID, for a request without X-Request-Id): ${cancel}`,
  );
});

for (const hierarchy of HIERARCHIES) {
  describe(`the operator's view on cgroup ${hierarchy}`, { skip: unavailable(hierarchy) }, () => {
    test('while CRIU holds the tasks (parked at its first PTRACE_DETACH): CHECKPOINTING in every sample past the freeze, kernelState THAWED (CRIU thaws to seize), thaw EBUSY saying CHECKPOINTING', async () => {
      const cgroup = await sleeper(hierarchy, 'parked');
      const moments = await dumpMomentsOf(cgroup);
      // Parked for 20 s: room for one agentctl run on a loaded machine (it starts node), not a
      // timing assertion; the dump then ends as any other.
      const parkLog = join(lab.tempDir('parked'), 'ptrace.log');
      plan.set(`inject:delay_enter=20000000:when=${moments.atDetach} log:${parkLog}`);
      const requestId = `operator-parked-${hierarchy}`;
      const dump = api(agent.socket, 'POST', '/v1/checkpoints', { body: checkpointBody(cgroup), headers: { 'X-Request-Id': requestId } });
      let settled = false;
      void dump.finally(() => (settled = true));

      const samples: Json[] = [];
      let parked: Json | undefined;
      while (!settled && !parked) {
        const s = await state(cgroup);
        samples.push(s);
        if (s.kernelState === 'THAWED' && s.holder?.phase === 'checkpointing') parked = s;
      }
      assert.ok(parked, `never saw CRIU's thaw; samples: ${JSON.stringify(samples.map((s) => [s.state, s.kernelState, s.holder?.phase]))}`);
      // Past the freeze: not while the lock is just taken (`started`, before the record says more) or freezing.
      const past = (x: Json) => x.locked && x.holder?.operation === 'checkpoint' && !['started', 'freezing'].includes(x.holder.phase);
      for (const s of samples.filter(past)) {
        assert.equal(s.state, 'CHECKPOINTING', JSON.stringify(s));
      }
      assert.equal(parked.state, 'CHECKPOINTING');
      const ops = (await api(agent.socket, 'GET', '/v1/operations')).body.operations;
      assert.equal(ops.find((o: { requestId: string }) => o.requestId === requestId)?.phase, 'dump');
      const metrics = (await api(agent.socket, 'GET', '/v1/metrics')).text;
      assert.match(metrics, /^agentd_checkpointing_cgroups 1$/m);
      assert.ok(metrics.includes(`agentd_checkpointing{cgroup="${hierarchy}:${cgroup.path}"} 1\n`), metrics);

      // The samples above end at CRIU's thaw, which comes before the park: the park is waited for.
      await waitUntil('CRIU to be parked at its first PTRACE_DETACH', () => parkedAtCall(parkLog) === moments.atDetach, 15_000);
      const thaw = await ctl('thaw', cgroup.path, '--hierarchy', hierarchy);
      failed(thaw, 'EBUSY', 4, new RegExp(`is CHECKPOINTING \\(request ${requestId}, since`));
      const answer = await dump;
      assert.equal(answer.status, 201, answer.text);
      const after = await state(cgroup);
      assert.deepEqual([after.state, after.kernelState, after.locked], ['THAWED', 'THAWED', false]);
      ok(await ctl('delete', answer.body.id));
    });

    test('agentctl operations lists a running checkpoint (CRIU parked before it seizes anything); agentctl cancel ends it with EINTR and the cgroup back THAWED; an unknown id is ENOENT', async () => {
      const cgroup = await sleeper(hierarchy, 'cancelled');
      const moments = await dumpMomentsOf(cgroup);
      // Parked for up to 60 s before its first seize: CRIU holds nothing there, so the cancel may
      // stop it at once (docs/criu-faults.md); the park is the upper bound, not a timing assertion.
      plan.set(`inject:delay_enter=60000000:when=${moments.beforeSeize}`);
      const requestId = `operator-cancel-${hierarchy}`;
      const dump = api(agent.socket, 'POST', '/v1/checkpoints', { body: checkpointBody(cgroup), headers: { 'X-Request-Id': requestId } });
      let mine: Json | undefined;
      for (let i = 0; i < 600 && mine?.phase !== 'dump'; i++) {
        const ops = (await api(agent.socket, 'GET', '/v1/operations')).body.operations;
        mine = ops.find((o: { requestId: string }) => o.requestId === requestId);
        if (mine?.phase !== 'dump') await new Promise((r) => setTimeout(r, 50));
      }

      const listed = JSON.parse(ok(await ctl('operations', '--json')));
      mine = listed.operations.find((o: { requestId: string }) => o.requestId === requestId);
      assert.deepEqual(
        { kind: mine?.kind, target: mine?.target, cgroup: mine?.cgroup, phase: mine?.phase, cancelling: mine?.cancelling },
        {
          kind: 'checkpoint',
          target: `${hierarchy}:${cgroup.path}`,
          cgroup: `${hierarchy}:${cgroup.path}`,
          phase: 'dump',
          cancelling: false,
        },
      );
      assert.equal(typeof mine.peer?.pid, 'number', 'the peer is known (SO_PEERCRED)');
      assert.equal(mine.peer.uid, 0);
      assert.match(mine.since, /^\d{4}-\d\d-\d\dT/);
      const health = await api(agent.socket, 'GET', '/v1/health');
      assert.ok(
        health.body.operations.some((o: { requestId: string }) => o.requestId === requestId),
        'health shows it too',
      );
      const table = ok(await ctl('operations'));
      assert.match(table, /^REQUEST\s+KIND\s+CGROUP\s+PHASE\s+STARTED\s+PEER\n/);
      assert.match(
        table,
        new RegExp(
          `^${requestId}\\s+checkpoint\\s+${hierarchy}:${cgroup.path}\\s+dump\\s+\\d\\d:\\d\\d:\\d\\d \\(\\d+ s ago\\)\\s+pid \\d+ uid 0$`,
          'm',
        ),
      );

      const cancel = await ctl('cancel', requestId);
      assert.match(ok(cancel), new RegExp(`^cancelling checkpoint of ${hierarchy}:${cgroup.path} \\(request ${requestId}\\)`));
      const answer = await dump;
      assert.equal(answer.status, 503, answer.text);
      assert.equal(answer.body.error.code, 'EINTR');
      const after = await state(cgroup);
      assert.deepEqual([after.state, after.kernelState, after.locked], ['THAWED', 'THAWED', false]);
      assert.ok(
        !JSON.parse(ok(await ctl('operations', '--json'))).operations.some((o: { requestId: string }) => o.requestId === requestId),
        'gone from the list',
      );
      failed(await ctl('cancel', requestId), 'ENOENT', 3, /no operation .* is running/);
      failed(await ctl('cancel', 'not an id!'), 'EINVAL', 2, /invalid request id/);
    });

    test('while a checkpoint hashes its image after an early thaw (its lock held as dump-flow holds it then): CHECKPOINTING with kernelState THAWED, and thaw, freeze, kill get EBUSY saying so', async () => {
      // The dump flow's records during the checksums, written through the same lock module by this
      // test, which holds them as long as it likes (the checksums themselves cannot be paused).
      const cgroup = await sleeper(hierarchy, 'hashing');
      const control = new CgroupControl({ runDir: agent.runDir });
      const lease = control.lease(resolveCgroup(cgroup.path, { hierarchy }), { requestId: 'hash-held', operation: 'checkpoint' });
      try {
        lease.update({ phase: 'freezing', priorState: 'THAWED' });
        await lease.freezer.freeze();
        const hold = lease.beginCheckpoint();
        assert.equal((await hold.end()).finalState, 'FROZEN');
        lease.update({ phase: 'after-thawed' });
        await lease.freezer.thaw();
        const s = await state(cgroup);
        assert.deepEqual([s.state, s.kernelState, s.holder?.phase], ['CHECKPOINTING', 'THAWED', 'after-thawed']);
        assert.equal(
          ok(await ctl('state', cgroup.path, '--hierarchy', hierarchy)),
          'CHECKPOINTING  1 process in the subtree, 1 in the cgroup itself\n',
        );
        for (const verb of ['thaw', 'freeze', 'kill']) {
          failed(
            await ctl(verb, cgroup.path, '--hierarchy', hierarchy),
            'EBUSY',
            4,
            /is CHECKPOINTING \(request hash-held, since [\d:]+; its image is being checksummed and published, --after thawed\)/,
          );
        }
      } finally {
        lease.release();
      }
      const released = await state(cgroup);
      assert.deepEqual([released.state, released.locked], ['THAWED', false]);
    });

    test('a restore leaves the cgroup as it was checkpointed (FROZEN stays FROZEN); --thawed and --frozen choose', async () => {
      plan.set();
      const { cgroup, dir } = await countingTree(lab, hierarchy, 'restored');
      const counter = join(dir, 'child-1');
      ok(await ctl('freeze', cgroup.path, '--hierarchy', hierarchy));
      const taken = JSON.parse(ok(await ctl('checkpoint', cgroup.path, '--hierarchy', hierarchy, '--after', 'killed', '--json')));
      assert.equal(taken.finalState, 'EMPTY');
      const shown = JSON.parse(ok(await ctl('show', taken.id, '--json')));
      assert.equal(shown.priorState, 'FROZEN');

      // Default: the prior state, FROZEN. The counter stays still until the operator thaws.
      const frozen = JSON.parse(ok(await ctl('restore', taken.id, '--json')));
      assert.equal(frozen.state, 'FROZEN');
      assert.equal(ok(await ctl('state', cgroup.path, '--hierarchy', hierarchy)).split(' ')[0], 'FROZEN', 'the state word');
      const still = counterValue(counter);
      ok(await ctl('thaw', cgroup.path, '--hierarchy', hierarchy));
      await waitForCount(counter, still);
      ok(await ctl('kill', cgroup.path, '--hierarchy', hierarchy));

      // --thawed: running at once.
      const human = ok(await ctl('restore', taken.id, '--thawed'));
      assert.match(human, /, THAWED\n$/);
      assert.equal(ok(await ctl('state', cgroup.path, '--hierarchy', hierarchy)).split(' ')[0], 'THAWED', 'the state word');
      const running = counterValue(counter);
      await waitForCount(counter, running);
      ok(await ctl('kill', cgroup.path, '--hierarchy', hierarchy));

      // Through the API: after "frozen", and a value it does not know refused.
      const viaApi = await api(agent.socket, 'POST', `/v1/checkpoints/${taken.id}/restore`, { body: { after: 'frozen' } });
      assert.equal(viaApi.status, 200, viaApi.text);
      assert.equal(viaApi.body.state, 'FROZEN');
      assert.equal((await state(cgroup)).state, 'FROZEN');
      ok(await ctl('kill', cgroup.path, '--hierarchy', hierarchy));
      const bad = await api(agent.socket, 'POST', `/v1/checkpoints/${taken.id}/restore`, { body: { after: 'killed' } });
      assert.equal(bad.status, 400, bad.text);
      assert.match(bad.body.error.message, /"after" must be one of prior, thawed, frozen/);
      failed(await ctl('restore', taken.id, '--thawed', '--frozen'), 'EINVAL', 2, /mutually exclusive/);
      ok(await ctl('delete', taken.id));
    });

    test('a checkpoint of a THAWED cgroup restores THAWED; --frozen leaves it FROZEN', async () => {
      plan.set();
      const { cgroup, dir } = await countingTree(lab, hierarchy, 'thawed-prior');
      const taken = JSON.parse(ok(await ctl('checkpoint', cgroup.path, '--hierarchy', hierarchy, '--after', 'killed', '--json')));
      const restored = JSON.parse(ok(await ctl('restore', taken.id, '--frozen', '--json')));
      assert.equal(restored.state, 'FROZEN');
      assert.equal(ok(await ctl('state', cgroup.path, '--hierarchy', hierarchy)).split(' ')[0], 'FROZEN', 'the state word');
      ok(await ctl('kill', cgroup.path, '--hierarchy', hierarchy));
      const again = JSON.parse(ok(await ctl('restore', taken.id, '--json')));
      assert.equal(again.state, 'THAWED');
      await waitForCount(join(dir, 'child-1'), counterValue(join(dir, 'child-1')));
      ok(await ctl('kill', cgroup.path, '--hierarchy', hierarchy));
      ok(await ctl('delete', taken.id));
    });

    test('a failed attempt is listed by its time among the good ones with its cgroup, size and error, shown with its reason, and pruned (dry run first); prune without a filter is refused', async () => {
      const cgroup = await sleeper(hierarchy, 'failing');
      plan.set();
      const good = JSON.parse(ok(await ctl('checkpoint', cgroup.path, '--hierarchy', hierarchy, '--json')));
      // CRIU killed at its first ptrace call, before it seizes anything: harmless to the task
      // (docs/criu-faults.md), and a failed attempt with CRIU's log kept.
      plan.set('inject:signal=SIGKILL:when=1');
      const attempt = await ctl('checkpoint', cgroup.path, '--hierarchy', hierarchy);
      failed(attempt, 'ECRIU', 7, /killed by signal SIGKILL/);
      const listed = JSON.parse(ok(await ctl('checkpoints', '--json'))).checkpoints as Json[];
      const mine = listed.filter((c) => c.cgroup === cgroup.path);
      assert.deepEqual(
        mine.map((c) => c.status),
        ['good', 'failed'],
        'oldest first: the good one, then the failed attempt',
      );
      const failedOne = mine[1];
      assert.equal(failedOne.hierarchy, hierarchy);
      assert.equal(failedOne.error.code, 'ECRIU');
      assert.match(failedOne.error.message, /killed by signal SIGKILL/);
      assert.ok(failedOne.bytes > 0, 'its size: CRIU log kept');
      assert.ok(failedOne.createdAt >= good.createdAt, `${failedOne.createdAt} after ${good.createdAt}`);
      const times = listed.map((c) => c.createdAt ?? '');
      assert.deepEqual(times, [...times].sort(), 'the whole list is sorted by time');

      const table = ok(await ctl('checkpoints'));
      assert.match(
        table,
        new RegExp(
          `^${failedOne.id}\\s+failed \\(ECRIU\\)\\s+${hierarchy}:${cgroup.path}\\s+\\d{4}-\\d\\d-\\d\\dT\\S+\\s+\\d+(\\.\\d)? (B|KiB|MiB)\\s+-$`,
          'm',
        ),
      );
      const shown = ok(await ctl('show', failedOne.id));
      assert.match(shown, new RegExp(`^${failedOne.id} \\(failed\\)\\n  cgroup     ${hierarchy}:${cgroup.path}\\n`));
      assert.match(shown, /^ {2}error {6}ECRIU: .*killed by signal SIGKILL/m);
      const shownJson = JSON.parse(ok(await ctl('show', failedOne.id, '--json')));
      assert.equal(shownJson.status, 'failed');
      assert.equal(shownJson.error.code, 'ECRIU');

      failed(await ctl('prune'), 'EINVAL', 2, /prune needs --failed, --older-than DURATION, or both/);
      failed(await ctl('prune', '--older-than', 'soon'), 'EINVAL', 2, /--older-than takes a duration/);
      const dry = JSON.parse(ok(await ctl('prune', '--failed', '--dry-run', '--json')));
      assert.equal(dry.dryRun, true);
      assert.ok(dry.removed.some((c: Json) => c.id === failedOne.id));
      assert.ok(!dry.removed.some((c: Json) => c.status === 'good'), 'only failed ones');
      assert.ok(existsSync(failedOne.dir), 'a dry run removes nothing');
      // Nothing is a week old here.
      assert.equal(ok(await ctl('prune', '--older-than', '7d')), 'removed nothing\n');
      const pruned = ok(await ctl('prune', '--failed'));
      assert.match(pruned, /^removed \d+:\nID\s+STATUS\s+CGROUP\s+CREATED\s+SIZE\n/);
      assert.match(pruned, new RegExp(`^${failedOne.id}\\s+failed\\s+${hierarchy}:${cgroup.path}\\s`, 'm'));
      assert.ok(!existsSync(failedOne.dir), 'the failed attempt is gone');
      const after = JSON.parse(ok(await ctl('checkpoints', '--json'))).checkpoints as Json[];
      assert.deepEqual(
        after.filter((c) => c.cgroup === cgroup.path).map((c) => [c.id, c.status]),
        [[good.id, 'good']],
      );
      ok(await ctl('delete', good.id));
    });
  });
}

test('prune never removes a checkpoint in use (a restore claims it): it is kept and named, the others go', async () => {
  // In this process, with the library the agent runs: the in-use registry is per process, and a
  // claim is what a running restore holds (src/checkpoint/in-use.ts).
  const hierarchy = HIERARCHIES.find((h) => !unavailable(h));
  if (!hierarchy) return;
  plan.set();
  const images = lab.tempDir('prune-images');
  const checkpointer = new Checkpointer({
    control: new CgroupControl({ runDir: lab.tempDir('prune-run') }),
    imagesDir: images,
    criuPath: (await findCriu()).path,
  });
  const cgroup = await sleeper(hierarchy, 'in-use');
  const ref = resolveCgroup(cgroup.path, { hierarchy });
  const first = await checkpointer.checkpoint(ref);
  const second = await checkpointer.checkpoint(ref);
  const release = claimCheckpoint(first.dir, first.id, 'restore', 'test-restore');
  try {
    const result = await checkpointer.prune({ olderThanMs: 0 });
    assert.deepEqual(
      result.removed.map((c) => c.id),
      [second.id],
    );
    assert.deepEqual(
      result.kept.map((k) => k.id),
      [first.id],
    );
    assert.match(result.kept[0].reason, /is being restored \(request test-restore\)/);
    assert.ok(existsSync(first.dir));
    assert.ok(!existsSync(second.dir));
  } finally {
    release();
  }
  await waitUntil('nothing left to prune', () => checkpointer.list().length === 1);
  assert.deepEqual(
    (await checkpointer.prune({ olderThanMs: 0 })).removed.map((c) => c.id),
    [first.id],
  );
});
