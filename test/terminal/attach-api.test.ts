// A shell job through the API, on v1 and v2: a bash reading lines on a pty, checkpointed with
// shellJob and --after killed (the answer warns how to get it back), refused a restore without a
// terminal (changing nothing), restored with "attach" onto a terminal agentd holds, then driven over
// the attach protocol: keys reach it, its answers come back, a resize reaches it (stty size, and its
// SIGWINCH trap), a second client is refused while one is attached (or takes over when it asks),
// detach leaves it running, a new attach gets it back with what it wrote meanwhile, and its exit
// ends the session and frees the terminal. The lab kills every process and removes every cgroup whether the test passes or not.

import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { anyHierarchy, HIERARCHIES, pidAlive, unavailable, waitUntil } from '../helpers/lab.js';
import { api, startAgent, withAgent } from '../daemon/agent.js';
import { attach, isAttached, startLineReader, type Attached } from './client.js';

const { lab, agent } = withAgent('attach-api');

// The job's own environment: nothing of the runner's changes what it prints.

for (const hierarchy of HIERARCHIES) {
  describe(`a shell job through the API, cgroup ${hierarchy}`, { skip: unavailable(hierarchy) }, () => {
    test('checkpoint --after killed warns; restore without attach is refused; with attach: keys, output, resize, detach, re-attach, exit', async () => {
      const cgroup = lab.cgroup(hierarchy, 'job');
      const { pid, pty: original } = await startLineReader(lab, cgroup, 'one');

      const made = await api(agent.socket, 'POST', '/v1/checkpoints', {
        body: { cgroup: cgroup.path, hierarchy, shellJob: true, after: 'killed' },
      });
      assert.equal(made.status, 201, made.text);
      const id: string = made.body.id;
      assert.equal(made.body.warnings.length, 1);
      assert.match(made.body.warnings[0], new RegExp(`agentctl restore ${id} --attach`));
      await waitUntil(`the job (${pid}) to be killed`, () => !pidAlive(pid));
      original.kill();

      // Without a terminal to give it: refused, nothing touched (no process, no terminal, not in use).
      const refused = await api(agent.socket, 'POST', `/v1/checkpoints/${id}/restore`, { body: {} });
      assert.equal(refused.status, 400, refused.text);
      assert.equal(refused.body.error.code, 'EINVAL');
      assert.match(refused.body.error.message, new RegExp(`--shell-job.*restore it with --attach \\(agentctl restore ${id} --attach`));
      assert.deepEqual(lab.pidsOf(cgroup), []);
      assert.deepEqual((await api(agent.socket, 'GET', '/v1/terminals')).body.terminals, []);
      const none = await attach(agent.socket, { cgroup: cgroup.path, hierarchy });
      assert.ok(!isAttached(none));
      assert.equal(none.status, 404);
      assert.match(none.body.error.message, /holds no terminal .*--attach/);

      const restored = await api(agent.socket, 'POST', `/v1/checkpoints/${id}/restore`, { body: { attach: true, cols: 100, rows: 30 } });
      assert.equal(restored.status, 200, restored.text);
      assert.deepEqual(restored.body.pids, [pid]);
      assert.deepEqual(
        restored.body.terminal && [restored.body.terminal.cgroup, restored.body.terminal.hierarchy, restored.body.terminal.pid],
        [cgroup.path, hierarchy, pid],
      );
      assert.deepEqual(lab.pidsOf(cgroup), [pid]);

      const first = await attach(agent.socket, { cgroup: cgroup.path, hierarchy, cols: '100', rows: '30' });
      assert.ok(isAttached(first), JSON.stringify(first));
      const a: Attached = first;
      await waitUntil('the attached event', () => a.events.length > 0);
      assert.deepEqual([a.events[0].type, a.events[0].pid, a.events[0].cgroup], ['attached', pid, cgroup.path]);
      a.type('size\r');
      await a.waitFor(/size 30 100 at 2/);
      // bash runs its WINCH trap once the line being read is in: the trap's answer comes before the next line's.
      a.resize(120, 40);
      a.type('size\r');
      await a.waitFor(/winch 40 120\r\nsize 40 120 at 3/);

      const second = await attach(agent.socket, { cgroup: cgroup.path, hierarchy });
      assert.ok(!isAttached(second));
      assert.equal(second.status, 409);
      assert.equal(second.body.error.code, 'EBUSY');
      assert.match(second.body.error.message, /is attached to agentctl pid \d+.*Ctrl-\]/);

      // Taking over: the first client is told why its session closed; the job does not notice.
      const took = await attach(agent.socket, { cgroup: cgroup.path, hierarchy, takeOver: 'true' });
      assert.ok(isAttached(took), JSON.stringify(took));
      const t: Attached = took;
      await a.closed;
      assert.deepEqual(
        a.events.map((e) => e.type),
        ['attached', 'closed'],
      );
      assert.match(a.events[1].message, /took over the terminal of .*; the job runs on/);
      await waitUntil('the attached event', () => t.events.length > 0);
      t.detach();
      await t.closed;
      assert.ok(pidAlive(pid), 'the job runs on after a detach');
      const status = await api(
        agent.socket,
        'GET',
        `/v1/cgroups/terminal?cgroup=${encodeURIComponent(cgroup.path)}&hierarchy=${hierarchy}`,
      );
      assert.equal(status.status, 200, status.text);
      assert.equal(status.body.pid, pid);
      assert.equal(status.body.attached, undefined);
      assert.deepEqual([status.body.cols, status.body.rows], [120, 40]);

      const again = await attach(agent.socket, { cgroup: cgroup.path, hierarchy });
      assert.ok(isAttached(again), JSON.stringify(again));
      const b: Attached = again;
      // What the job wrote before is replayed, then it goes on counting from where it was.
      await b.waitFor(/size 40 120 at 3/);
      assert.ok(b.events[0].replayedBytes > 0);
      const mark = b.output().length;
      b.type('two\r');
      await b.waitFor(/line 4: two/, mark);

      b.type('quit 7\r');
      await b.waitFor(/bye at 5/, mark);
      await b.closed;
      const ended = b.events.find((e) => e.type === 'ended');
      assert.ok(ended, JSON.stringify(b.events));
      // CRIU, the job's parent, reaps it and exits 0 whatever the job's status (measured, CRIU 4.1.1): the message says so.
      assert.equal(ended.exitCode, 0);
      assert.match(ended.message, new RegExp(`the job on ${hierarchy}:${cgroup.path} \\(pid ${pid}\\) ended`));
      await waitUntil('the job to be gone', () => !pidAlive(pid));
      assert.deepEqual((await api(agent.socket, 'GET', '/v1/terminals')).body.terminals, []);
      const late = await attach(agent.socket, { cgroup: cgroup.path, hierarchy });
      assert.ok(!isAttached(late));
      assert.equal(late.status, 404);
      assert.match(late.body.error.message, new RegExp(`the job on ${hierarchy}:${cgroup.path} \\(pid ${pid}\\) ended`));
    });
  });
}

test('agentd stopping while a client is attached: the client is told, the agent exits 0, the job loses its terminal', async () => {
  const hierarchy = anyHierarchy();
  const own = await startAgent(lab);
  try {
    const cgroup = lab.cgroup(hierarchy, 'stopping');
    const { pid, pty: original } = await startLineReader(lab, cgroup);
    const made = await api(own.socket, 'POST', '/v1/checkpoints', {
      body: { cgroup: cgroup.path, hierarchy, shellJob: true, after: 'killed' },
    });
    assert.equal(made.status, 201, made.text);
    await waitUntil(`the job (${pid}) to be killed`, () => !pidAlive(pid));
    original.kill();
    const restored = await api(own.socket, 'POST', `/v1/checkpoints/${made.body.id}/restore`, { body: { attach: true } });
    assert.equal(restored.status, 200, restored.text);
    const attached = await attach(own.socket, { cgroup: cgroup.path, hierarchy });
    assert.ok(isAttached(attached), JSON.stringify(attached));
    await waitUntil('the attached event', () => attached.events.length > 0);
    assert.equal(await own.stop(), 0);
    await attached.closed;
    assert.deepEqual(
      attached.events.map((e) => e.type),
      ['attached', 'closed'],
    );
    assert.match(attached.events[1].message, /agentd is stopping \(SIGTERM\): the job's terminal closes with it/);
    // The pty closes with agentd: the job's next read is an end of file, on which this one ends.
    await waitUntil(`the job (${pid}) to end once its terminal closed`, () => !pidAlive(pid));
  } finally {
    await own.stop();
  }
});
