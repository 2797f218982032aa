// Checkpoints through the daemon's API, with the real CRIU on real v1 and v2 cgroups: create (plain
// JSON and NDJSON progress), list, show, restore, delete; ETIMEDOUT, ENOSPC and ECRIU statuses; and
// cancellation: SIGTERM during a checkpoint, or a client that hangs up, puts the cgroup back as it
// was, releases the lock, leaves no good-looking image, and (SIGTERM) the agent exits 0.

import { test, describe } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { existsSync, mkdirSync, readdirSync, readFileSync } from 'node:fs';
import { request } from 'node:http';
import { join } from 'node:path';
import { resolveCgroup } from '../../src/cgroup/index.js';
import { CgroupControl } from '../../src/lock/index.js';
import {
  anyHierarchy,
  CGEXEC,
  FIXTURES,
  HIERARCHIES,
  pidAlive,
  processState,
  unavailable,
  waitUntil,
  type TestCgroup,
} from '../helpers/lab.js';
import { flockFree, kernelState } from '../lock/helpers.js';
import { counterValue, countingTree, waitForCount } from '../checkpoint/helpers.js';
import { agentctl, api, ndjson, startAgent, withAgent, type Agent } from './agent.js';
import type { Json } from '../helpers/json.js';

const { lab, agent } = withAgent('daemon-ckpt');

function lockFileOf(a: Agent, cgroup: TestCgroup): string {
  return new CgroupControl({ runDir: a.runDir }).lockPath(resolveCgroup(cgroup.path, { hierarchy: cgroup.hierarchy }));
}

const counting = (hierarchy: 'v1' | 'v2', name: string) => countingTree(lab, hierarchy, name);

/** Resident memory of a process, in KiB. */
function rssKiB(pid: number): number {
  return Number(/^VmRSS:\s+(\d+)/m.exec(readFileSync(`/proc/${pid}/status`, 'utf8'))?.[1] ?? 0);
}

/** A process holding `mib` MiB of touched memory (one memset): its dump takes long enough to interrupt. */
async function bigMemory(hierarchy: 'v1' | 'v2', name: string, mib: number): Promise<{ cgroup: TestCgroup; pid: number }> {
  const cgroup = lab.cgroup(hierarchy, name);
  // Sleeps in a loop that ignores sleep's result: a dump that leaves its task running ends the
  // task's sleep early, as a signal would (docs/criu.md), and a single `sleep 100000` would then end
  // the workload.
  lab.spawnIn(cgroup, 'perl', ['-e', `my $x = "U" x (${mib} << 20); sleep 1 while 1`]);
  const [pid] = await lab.waitForProcesses(cgroup, 1);
  await waitUntil(`${mib} MiB to be resident`, () => rssKiB(pid) >= mib * 1024, 60_000);
  return { cgroup, pid };
}

for (const hierarchy of HIERARCHIES) {
  describe(`checkpoint routes, cgroup ${hierarchy}`, { skip: unavailable(hierarchy) }, () => {
    test('POST /v1/checkpoints (201), list, show, restore (same pids, counters go on), delete', async () => {
      const { cgroup, dir, pids } = await counting(hierarchy, 'roundtrip');
      const created = await api(agent.socket, 'POST', '/v1/checkpoints', { body: { cgroup: cgroup.path, hierarchy, after: 'killed' } });
      assert.equal(created.status, 201, created.text);
      const summary = created.body;
      assert.match(summary.id, /\S/);
      assert.ok(existsSync(join(summary.dir, 'manifest.json')));
      assert.equal(summary.dir, join(agent.imagesDir, summary.id));
      assert.equal(summary.cgroup, cgroup.path);
      assert.equal(summary.hierarchy, hierarchy);
      assert.equal(summary.processes, 2);
      assert.equal(summary.finalState, 'EMPTY');
      for (const pid of pids) await waitUntil(`pid ${pid} to be gone`, () => !pidAlive(pid));
      const frozenAt = counterValue(join(dir, 'child-1'));

      const listed = await api(agent.socket, 'GET', '/v1/checkpoints');
      assert.equal(listed.status, 200);
      assert.deepEqual(
        listed.body.checkpoints
          .filter((c: { id: string }) => c.id === summary.id)
          .map((c: { status: string; cgroup: string }) => [c.status, c.cgroup]),
        [['good', cgroup.path]],
      );
      const shown = await api(agent.socket, 'GET', `/v1/checkpoints/${summary.id}`);
      assert.equal(shown.status, 200);
      assert.equal(shown.body.id, summary.id);
      assert.deepEqual(
        shown.body.trees
          .flatMap((t: { processes: { pid: number }[] }) => t.processes.map((p) => p.pid))
          .sort((a: number, b: number) => a - b),
        pids,
      );

      const restored = await api(agent.socket, 'POST', `/v1/checkpoints/${summary.id}/restore`, { body: {} });
      assert.equal(restored.status, 200, restored.text);
      assert.deepEqual(
        [...restored.body.pids].sort((a, b) => a - b),
        pids,
      );
      assert.deepEqual(
        lab.pidsOf(cgroup).sort((a, b) => a - b),
        pids,
      );
      await waitForCount(join(dir, 'child-1'), frozenAt);

      const deleted = await api(agent.socket, 'DELETE', `/v1/checkpoints/${summary.id}`);
      assert.equal(deleted.status, 200);
      assert.deepEqual(deleted.body, { deleted: summary.id });
      assert.equal(existsSync(summary.dir), false);
      assert.equal((await api(agent.socket, 'GET', `/v1/checkpoints/${summary.id}`)).status, 404);
    });

    test('with Accept: application/x-ndjson the stages stream as they happen; the last line is the result', async () => {
      const { cgroup } = await counting(hierarchy, 'stream');
      const arrived: number[] = [];
      const res = await api(agent.socket, 'POST', '/v1/checkpoints', {
        body: { cgroup: cgroup.path, hierarchy },
        headers: { Accept: 'application/x-ndjson' },
        onLine: () => arrived.push(Date.now()),
      });
      assert.equal(res.status, 200);
      assert.equal(res.headers['content-type'], 'application/x-ndjson');
      const lines = ndjson(res.text);
      const last = lines.at(-1);
      assert.equal(last.type, 'result');
      assert.equal(last.status, 201);
      assert.equal(last.result.finalState, 'THAWED', 'after: prior, and it was running');
      const stages = lines.filter((l) => l.type === 'progress').map((l) => l.stage);
      for (const stage of ['preflight', 'freeze', 'lock', 'dump', 'verify', 'manifest', 'done'])
        assert.ok(stages.includes(stage), `stage ${stage}`);
      assert.ok(lines.some((l) => l.stage === 'dump' && typeof l.bytes === 'number' && l.bytes > 0 && l.tree === 1 && l.trees === 1));
      assert.equal(arrived.length, lines.length, 'each line arrived on its own');
      assert.equal(kernelState(cgroup), 'THAWED');

      const restoreStream = await api(agent.socket, 'POST', `/v1/checkpoints/${last.result.id}/restore`, {
        body: { cgroup: cgroup.path, timeoutMs: 2000 },
        headers: { Accept: 'application/x-ndjson' },
      });
      const restoreLast = ndjson(restoreStream.text).at(-1);
      assert.equal(restoreLast.type, 'error', 'restoring over a live tree fails: its pids are taken');
      assert.ok(restoreLast.status >= 400 && typeof restoreLast.error.code === 'string' && restoreLast.error.message.length > 0);
      assert.equal(kernelState(cgroup), 'THAWED');
    });
  });
}

test("no lock file piles up: freeze, thaw, checkpoint, restore and refused requests leave the run dir's locks/ empty", async () => {
  const h = anyHierarchy();
  const { cgroup } = await counting(h, 'tidy-locks');
  const parent = lab.cgroup(h, 'tidy-parent');
  const child = lab.cgroup(h, 'tidy-parent/child');
  const locks = () => readdirSync(join(agent.runDir, 'locks'));
  const post = async (path: string, body: Record<string, unknown>, status: number) => {
    const res = await api(agent.socket, 'POST', path, { body });
    assert.equal(res.status, status, `${path} ${JSON.stringify(body)}: ${res.text}`);
    return res;
  };
  const target = { cgroup: cgroup.path, hierarchy: h };
  await post('/v1/cgroups/freeze', target, 200);
  await post('/v1/cgroups/thaw', target, 200);
  const made = await post('/v1/checkpoints', { ...target, after: 'killed' }, 201);
  assert.deepEqual(locks(), [], 'after freeze, thaw and checkpoint');
  await post(`/v1/checkpoints/${made.body.id}/restore`, {}, 200);
  await post(`/v1/checkpoints/${made.body.id}/restore`, {}, 409); // its pids are taken now
  await post('/v1/cgroups/freeze', { cgroup: parent.path, hierarchy: h }, 200);
  await post('/v1/cgroups/thaw', { cgroup: child.path, hierarchy: h }, 409); // frozen by its parent
  await post('/v1/checkpoints', { cgroup: child.path, hierarchy: h }, 409); // the same
  await post('/v1/checkpoints', { ...target, timeoutMs: 1 }, 504); // too short to freeze
  await post('/v1/cgroups/thaw', { cgroup: parent.path, hierarchy: h }, 200);
  await post('/v1/cgroups/freeze', { cgroup: `${lab.prefix}/no-such-cgroup`, hierarchy: h }, 404);
  assert.deepEqual(locks(), [], 'after restores and refused requests');
  await lab.killIn(cgroup);
});

test('while a restore runs (waiting for a zombie to free its pid), `agentctl delete` and a second restore of it get EBUSY naming the restore', async () => {
  const h = anyHierarchy();
  const cgroup = lab.cgroup(h, 'in-use');
  // Its parent does not reap it until told to: once killed, it holds its pid as a zombie, and a
  // restore waits for it, for as long as the test likes.
  const parent = lab.spawn(join(FIXTURES, 'workloads', 'zombie-parent.pl'), [CGEXEC, join(cgroup.dir, 'cgroup.procs'), 'sleep', '100000']);
  const [pid] = await lab.waitForProcesses(cgroup, 1);
  await waitUntil('the child to run sleep', () => readFileSync(`/proc/${pid}/comm`, 'utf8').trim() === 'sleep');
  const made = await api(agent.socket, 'POST', '/v1/checkpoints', { body: { cgroup: cgroup.path, hierarchy: h, after: 'thawed' } });
  assert.equal(made.status, 201, made.text);
  const id = made.body.id;
  process.kill(pid, 'SIGKILL');
  await waitUntil('the killed child to be a zombie', () => processState(pid) === 'Z');

  let onWait!: () => void;
  const waiting = new Promise<void>((resolve) => (onWait = resolve));
  // The zombie is waited for as long as the restore's timeout (30 s without one): long enough for
  // the agentctl below, which took over 30 s to start in a loaded VM guest.
  const restoring = api(agent.socket, 'POST', `/v1/checkpoints/${id}/restore`, {
    body: { timeoutMs: 600_000 },
    headers: { Accept: 'application/x-ndjson', 'X-Request-Id': 'restore-in-use-1' },
    onLine: (line) => line.stage === 'pids' && onWait(),
  });
  await waiting;
  const refusal = new RegExp(`checkpoint ${id} is being restored \\(request restore-in-use-1\\); try again when it is done`);
  const deleting = await agentctl(['delete', id, '--socket', agent.socket]);
  assert.equal(deleting.code, 4, deleting.stderr);
  assert.match(deleting.stderr, new RegExp(`^agentctl: EBUSY: ${refusal.source}`));
  const again = await api(agent.socket, 'POST', `/v1/checkpoints/${id}/restore`, { body: {}, headers: { Accept: 'application/x-ndjson' } });
  assert.equal(again.status, 409, 'refused before any progress stream starts');
  assert.equal(again.body.error.code, 'EBUSY');
  assert.match(again.body.error.message, refusal);

  process.kill(parent.pid!, 'SIGUSR1'); // the parent reaps it: the pid is free
  const last = ndjson((await restoring).text).at(-1);
  assert.equal(last.type, 'result', JSON.stringify(last));
  assert.deepEqual(last.result.pids, [pid]);
  const deleted = await agentctl(['delete', id, '--socket', agent.socket]);
  assert.equal(deleted.code, 0, deleted.stderr);
  await lab.killIn(cgroup);
});

describe('checkpoint errors', () => {
  const h = anyHierarchy();

  test('ETIMEDOUT 504: a timeout too short to freeze; the cgroup is as it was', async () => {
    const { cgroup } = await counting(h, 'timeout');
    const res = await api(agent.socket, 'POST', '/v1/checkpoints', { body: { cgroup: cgroup.path, hierarchy: h, timeoutMs: 1 } });
    assert.equal(res.status, 504, res.text);
    assert.equal(res.body.error.code, 'ETIMEDOUT');
    assert.equal(kernelState(cgroup), 'THAWED');
    assert.ok(flockFree(lockFileOf(agent, cgroup)));
  });

  test('ENOSPC 507: an image directory on a 1 MiB tmpfs is refused before anything is touched', async () => {
    const { cgroup, pids } = await counting(h, 'nospace');
    const tiny = join(lab.tempDir('tiny'), 'mnt');
    mkdirSync(tiny);
    execFileSync('mount', ['-t', 'tmpfs', '-o', 'size=1m,mode=0700', 'agentd-test', tiny]);
    // A request may name only a directory the agent was started to allow.
    const allowing = await startAgent(lab, { args: ['--allow-images-dir', tiny] });
    try {
      const res = await api(allowing.socket, 'POST', '/v1/checkpoints', { body: { cgroup: cgroup.path, hierarchy: h, imagesDir: tiny } });
      assert.equal(res.status, 507, res.text);
      assert.equal(res.body.error.code, 'ENOSPC');
      assert.equal(kernelState(cgroup), 'THAWED');
      assert.deepEqual(
        lab.pidsOf(cgroup).sort((a, b) => a - b),
        pids,
      );
    } finally {
      await allowing.stop();
      execFileSync('umount', [tiny]);
    }
  });

  test('ECRIU 500: an agent whose CRIU is missing refuses checkpoints, naming what to install', async () => {
    const broken = await startAgent(lab, { args: ['--criu', '/nonexistent/criu'] });
    try {
      const { cgroup } = await counting(h, 'nocriu');
      const res = await api(broken.socket, 'POST', '/v1/checkpoints', { body: { cgroup: cgroup.path, hierarchy: h } });
      assert.equal(res.status, 500);
      assert.equal(res.body.error.code, 'ECRIU');
      assert.match(res.body.error.message, /npm run setup|apt-get install criu/);
      assert.equal(kernelState(cgroup), 'THAWED');
      const host = await api(broken.socket, 'GET', '/v1/host');
      assert.equal(host.body.criu.ok, false);
      assert.equal(host.body.criu.error.code, 'ECRIU');
    } finally {
      assert.equal(await broken.stop(), 0);
    }
  });
});

test('shellJob through the API: a job on a terminal is dumped; restoring it is refused (no terminal to give it), changing nothing', async () => {
  const { spawn } = await import('node-pty');
  const cgroup = lab.cgroup(anyHierarchy(), 'pty');
  const file = join(lab.tempDir('pty'), 'count');
  const job = spawn(CGEXEC, [join(cgroup.dir, 'cgroup.procs'), 'perl', join(FIXTURES, 'criu', 'counter.pl'), file], { cols: 80, rows: 24 });
  lab.track(job.pid);
  let printed = '';
  job.onData((d) => (printed += d));
  try {
    await waitUntil('the job to print on its terminal', () => /tick \d+/.test(printed));
    const [pid] = await lab.waitForProcesses(cgroup, 1);
    const made = await api(agent.socket, 'POST', '/v1/checkpoints', {
      body: { cgroup: cgroup.path, hierarchy: cgroup.hierarchy, shellJob: true },
    });
    assert.equal(made.status, 201, made.text);
    assert.equal((await api(agent.socket, 'GET', `/v1/checkpoints/${made.body.id}`)).body.options.shellJob, true);
    const restore = await api(agent.socket, 'POST', `/v1/checkpoints/${made.body.id}/restore`, { body: {} });
    assert.equal(restore.status, 400, restore.text);
    assert.equal(restore.body.error.code, 'EINVAL');
    assert.match(restore.body.error.message, /--shell-job.*terminal/);
    assert.deepEqual(lab.pidsOf(cgroup), [pid]);
    assert.equal(kernelState(cgroup), 'THAWED');
  } finally {
    job.kill('SIGKILL');
  }
});

describe('cancellation', () => {
  const h = anyHierarchy();

  /** Starts a streamed checkpoint; resolves `dumping` when the dump stage begins. */
  function streamedCheckpoint(a: Agent, cgroup: TestCgroup) {
    const lines: Json[] = [];
    let onDump!: () => void;
    const dumping = new Promise<void>((resolve) => (onDump = resolve));
    const done = api(a.socket, 'POST', '/v1/checkpoints', {
      body: { cgroup: cgroup.path, hierarchy: cgroup.hierarchy },
      headers: { Accept: 'application/x-ndjson' },
      onLine: (line) => {
        lines.push(line);
        if (line.stage === 'dump') onDump();
      },
    });
    return { lines, dumping, done };
  }

  test('SIGTERM during a checkpoint: EINTR on the stream, cgroup back to its prior state, lock free, no good image, exit 0', async () => {
    const own = await startAgent(lab);
    // 64 MiB: a cancelled dump is let run to its end once CRIU holds the task (docs/criu-faults.md),
    // and 512 MiB took over 2 minutes to dump under software emulation in the VM guests.
    const { cgroup, pid } = await bigMemory(h, 'sigterm', 64);
    const run = streamedCheckpoint(own, cgroup);
    await run.dumping;
    assert.equal((await api(own.socket, 'GET', '/v1/metrics')).text.match(/^agentd_checkpointing_cgroups (\d+)$/m)?.[1], '1');
    own.child.kill('SIGTERM');
    const res = await run.done;
    assert.equal(await own.exited, 0, own.log());
    const last = ndjson(res.text).at(-1);
    assert.equal(last.type, 'error', `the checkpoint was cut short, not finished: ${res.text}`);
    assert.equal(last.error.code, 'EINTR');
    assert.equal(last.status, 503);
    assert.equal(kernelState(cgroup), 'THAWED', 'back to its prior state');
    assert.ok(pidAlive(pid), `its process is alive; the stream: ${res.text}\nthe agent's log:\n${own.log()}`);
    assert.deepEqual(lab.pidsOf(cgroup), [pid]);
    assert.ok(flockFree(lockFileOf(own, cgroup)), 'the lock is free');
    assert.match(own.log(), /agentd stopping reason=SIGTERM operations=1/);

    // A new agent on the same directories lists no good checkpoint.
    const next = await startAgent(lab, { dir: own.dir });
    try {
      const listed = await api(next.socket, 'GET', '/v1/checkpoints');
      assert.deepEqual(
        listed.body.checkpoints.filter((c: { status: string }) => c.status === 'good'),
        [],
      );
    } finally {
      assert.equal(await next.stop(), 0);
    }
  });

  test('a client that hangs up mid-checkpoint cancels it; the agent keeps serving', async () => {
    // 128 MiB: enough that the hang-up arrives while CRIU dumps here, while 512 MiB, let run to
    // its end once cancelled, outlasted 3 minutes in a VM guest.
    const { cgroup, pid } = await bigMemory(h, 'hangup', 128);
    let req!: ReturnType<typeof request>;
    const dumping = new Promise<void>((resolve, reject) => {
      req = request(
        {
          socketPath: agent.socket,
          method: 'POST',
          path: '/v1/checkpoints',
          headers: { 'Content-Type': 'application/json', Accept: 'application/x-ndjson' },
        },
        (res) => res.on('data', (d: Buffer) => d.toString().includes('"stage":"dump"') && resolve()),
      );
      req.on('error', () => undefined);
      req.end(JSON.stringify({ cgroup: cgroup.path, hierarchy: cgroup.hierarchy }));
      setTimeout(() => reject(new Error('no dump stage within 60 s')), 60_000).unref();
    });
    await dumping;
    req.destroy();
    // Up to 4 minutes: a cancelled dump is let run to its end once CRIU holds the task, and that
    // is slow under software emulation on a loaded machine.
    await waitUntil('the checkpoint to be cancelled', () => /operation=checkpoint .*outcome=EINTR/.test(agent.log()), 240_000);
    assert.equal(kernelState(cgroup), 'THAWED');
    assert.deepEqual(lab.pidsOf(cgroup), [pid]);
    assert.ok(flockFree(lockFileOf(agent, cgroup)));
    const health = await api(agent.socket, 'GET', '/v1/health');
    assert.deepEqual(health.body.operations, []);
  });
});
