// Restoring into a new PID namespace through the API and through agentctl, against a real agentd:
// the request field and the flag, the answer's host and namespace pids, the EBUSY hint, and the
// restored job outliving the agent that restored it (its namespace's init is not agentd's child
// in any way that matters: it is in the job's cgroups, in a process group of its own).

import { test, describe } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync, readlinkSync } from 'node:fs';
import { HIERARCHIES, pidAlive, unavailable, waitUntil } from '../helpers/lab.js';
import { agentctl, api, startAgent, withAgent } from '../daemon/agent.js';
import { countingTree } from './helpers.js';

const { lab, agent } = withAgent('pidns-api');
const ctl = (...args: string[]) => agentctl(['--socket', agent.socket, ...args]);

const nsPidOf = (pid: number): number => Number(/^NSpid:.*\s(\d+)\s*$/m.exec(readFileSync(`/proc/${pid}/status`, 'utf8'))![1]);

for (const hierarchy of HIERARCHIES) {
  describe(`--pid-namespace new through the API and agentctl, cgroup ${hierarchy}`, { skip: unavailable(hierarchy) }, () => {
    test('POST .../restore with pidNamespace new beside the running originals: 200, host and namespace pids; a bad value is 400', async () => {
      const { cgroup, pids } = await countingTree(lab, hierarchy, 'api');
      const made = await api(agent.socket, 'POST', '/v1/checkpoints', { body: { cgroup: cgroup.path, hierarchy, after: 'thawed' } });
      assert.equal(made.status, 201, made.text);
      const id = made.body.id as string;
      const bad = await api(agent.socket, 'POST', `/v1/checkpoints/${id}/restore`, { body: { pidNamespace: 'other' } });
      assert.equal(bad.status, 400, bad.text);
      assert.match(bad.body.error.message, /"pidNamespace" must be one of host, new/);
      const taken = await api(agent.socket, 'POST', `/v1/checkpoints/${id}/restore`, { body: {} });
      assert.equal(taken.status, 409, taken.text);
      assert.match(taken.body.error.message, /--pid-namespace new/);

      const target = lab.cgroup(hierarchy, 'api-copy');
      const restored = await api(agent.socket, 'POST', `/v1/checkpoints/${id}/restore`, {
        body: { cgroup: target.path, hierarchy, pidNamespace: 'new' },
      });
      assert.equal(restored.status, 200, restored.text);
      const body = restored.body as {
        pidNamespace: string;
        pids: number[];
        processes: { pid: number; nsPid: number }[];
        namespaceInit: number;
        warnings: string[];
      };
      assert.equal(body.pidNamespace, 'new');
      assert.deepEqual(body.warnings, []);
      assert.deepEqual(
        body.processes.map((p) => p.nsPid).sort((a, b) => a - b),
        pids,
      );
      for (const { pid, nsPid } of body.processes) assert.equal(nsPidOf(pid), nsPid, `${pid} is ${nsPid} inside`);
      assert.deepEqual(
        lab.pidsOf(target).sort((a, b) => a - b),
        [...body.pids, body.namespaceInit].sort((a, b) => a - b),
      );
      assert.deepEqual(
        lab.pidsOf(cgroup).sort((a, b) => a - b),
        pids,
        'the originals run on',
      );
      await lab.killIn(target);
      await lab.killIn(cgroup);
    });

    test('agentctl restore --pid-namespace new: the line names host pids, the pids inside and the init; --json the same; EBUSY without it', async () => {
      const { cgroup, pids } = await countingTree(lab, hierarchy, 'cli');
      const made = await ctl('checkpoint', cgroup.path, '--hierarchy', hierarchy, '--after', 'thawed', '--json');
      assert.equal(made.code, 0, made.stderr);
      const id = JSON.parse(made.stdout).id as string;
      const refused = await ctl('restore', id);
      assert.equal(refused.code, 4, refused.stderr);
      assert.match(
        refused.stderr,
        /^agentctl: EBUSY: pids of checkpoint .* or restore it into a new PID namespace \(--pid-namespace new\)/,
      );

      const first = lab.cgroup(hierarchy, 'cli-copy-1');
      const line = await ctl('restore', id, '--cgroup', first.path, '--hierarchy', hierarchy, '--pid-namespace', 'new');
      assert.equal(line.code, 0, line.stderr);
      const match = new RegExp(
        `^restored ${id} into ${hierarchy}:${first.path} in a new PID namespace \\(its init is pid (\\d+)\\): pids (\\d+) (\\d+), inside the namespace (\\d+) (\\d+) \\(1 tree, [^)]*\\), THAWED$`,
      ).exec(line.stdout.trim());
      assert.ok(match, line.stdout);
      const [init, host1, host2, ns1, ns2] = match.slice(1).map(Number);
      assert.deepEqual(
        [ns1, ns2].sort((a, b) => a - b),
        pids,
      );
      assert.equal(nsPidOf(host1), ns1);
      assert.equal(nsPidOf(host2), ns2);
      assert.deepEqual(
        lab.pidsOf(first).sort((a, b) => a - b),
        [init, host1, host2].sort((a, b) => a - b),
      );

      const second = lab.cgroup(hierarchy, 'cli-copy-2');
      const json = await ctl('restore', id, '--cgroup', second.path, '--hierarchy', hierarchy, '--pid-namespace', 'new', '--json');
      assert.equal(json.code, 0, json.stderr);
      const summary = JSON.parse(json.stdout) as { processes: { pid: number; nsPid: number }[]; namespaceInit: number };
      assert.deepEqual(
        summary.processes.map((p) => p.nsPid).sort((a, b) => a - b),
        pids,
      );
      assert.notEqual(readlinkSync(`/proc/${summary.namespaceInit}/ns/pid`), readlinkSync(`/proc/${init}/ns/pid`), 'a namespace each');
      for (const copy of [first, second]) await lab.killIn(copy);
      await lab.killIn(cgroup);
    });
  });
}

test(
  'a job restored into a new PID namespace outlives the agent that restored it',
  { skip: unavailable('v2') && unavailable('v1') },
  async () => {
    const hierarchy = unavailable('v2') ? 'v1' : 'v2';
    const own = await startAgent(lab);
    const { cgroup } = await countingTree(lab, hierarchy, 'outlives');
    const made = await api(own.socket, 'POST', '/v1/checkpoints', { body: { cgroup: cgroup.path, hierarchy, after: 'killed' } });
    assert.equal(made.status, 201, made.text);
    const restored = await api(own.socket, 'POST', `/v1/checkpoints/${made.body.id}/restore`, { body: { pidNamespace: 'new' } });
    assert.equal(restored.status, 200, restored.text);
    const { pids, namespaceInit } = restored.body as { pids: number[]; namespaceInit: number };
    assert.equal(await own.stop(), 0);
    for (const pid of [...pids, namespaceInit]) assert.equal(pidAlive(pid), true, `${pid} runs on after agentd stopped`);
    await lab.killIn(cgroup);
    await waitUntil('the init to be gone with its job', () => !pidAlive(namespaceInit));
  },
);
