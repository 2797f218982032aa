// bin/agentd-run, the one place agentd's node settings are written (setup's launcher and the
// benchmark start agentd through it): the agent it starts is the process it was given (it execs in
// place, as systemd's Type=notify needs), and it runs with the settings, as the kernel and V8 show.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { Lab } from '../helpers/lab.js';
import { AGENTD_RUN, agentArgs, agentPaths, api, startAgent } from './agent.js';

const REQUESTS = 3000;

test('bin/agentd-run starts agentd in place, with its young generation capped and two malloc arenas', async (t) => {
  const lab = new Lab('agentd-run');
  t.after(() => lab.cleanup());
  const paths = agentPaths(lab);
  const agent = await startAgent(lab, {
    dir: paths.dir,
    env: { AGENTD_NODE: process.execPath },
    command: { file: AGENTD_RUN, args: agentArgs(paths) },
  });
  try {
    const health = await api(paths.socket, 'GET', '/v1/health');
    assert.equal(health.status, 200);
    assert.equal(health.body.pid, agent.pid, 'the answering agent is the process started, not a child of a shell');
    const argv = readFileSync(`/proc/${agent.pid}/cmdline`, 'utf8').split('\0');
    assert.equal(argv[0], process.execPath);
    assert.ok(argv.includes('--max-semi-space-size=1'), argv.join(' '));
    const env = readFileSync(`/proc/${agent.pid}/environ`, 'utf8').split('\0');
    assert.ok(env.includes('MALLOC_ARENA_MAX=2'), 'MALLOC_ARENA_MAX=2 in its environment');
    // V8's own word, through the agent's metrics, after enough requests to grow node's default
    // young generation (measured here: 16 MiB of new space after these requests):
    // capped, it stays at two of 1 MiB.
    for (let i = 0; i < REQUESTS; i++) assert.equal((await api(paths.socket, 'GET', '/v1/health')).status, 200);
    const metrics = await api(paths.socket, 'GET', '/v1/metrics');
    assert.equal(metrics.status, 200);
    const m = /^nodejs_heap_space_size_total_bytes\{space="new"\} (\d+)/m.exec(metrics.text);
    assert.ok(m, 'the metrics show the new space');
    assert.ok(Number(m[1]) <= 2 * 1024 * 1024, `new space ${Number(m[1]) / 1024} KiB after ${REQUESTS} requests`);
  } finally {
    assert.equal(await agent.stop(), 0);
  }
});
