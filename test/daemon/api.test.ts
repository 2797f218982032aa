// The HTTP API of a real agentd on a temporary socket, over raw HTTP: discovery, the freezer routes on
// real v1 and v2 cgroups, error codes and their statuses, and bad requests that change nothing.

import { test, describe, before } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, readdirSync } from 'node:fs';
import { request as httpRequest } from 'node:http';
import { connect } from 'node:net';
import { release } from 'node:os';
import { join } from 'node:path';
import { resolveCgroup } from '../../src/cgroup/index.js';
import { HTTP_STATUS } from '../../src/daemon/index.js';
import { ERROR_CODES } from '../../src/errors/index.js';
import { CgroupControl } from '../../src/lock/index.js';
import { HIERARCHIES, anyHierarchy, unavailable, type TestCgroup } from '../helpers/lab.js';
import { holdWithShellTool, kernelState, killAndWait } from '../lock/helpers.js';
import { api, withAgent } from './agent.js';

const { lab, agent } = withAgent('daemon-api');

function lockFiles(): string[] {
  const dir = join(agent.runDir, 'locks');
  return existsSync(dir) ? readdirSync(dir).sort() : [];
}

/** What a bad request must not change: the kernel state, the processes, the lock files. */
function snapshot(cgroup: TestCgroup) {
  return { state: kernelState(cgroup), pids: lab.pidsOf(cgroup).sort(), locks: lockFiles() };
}

describe('discovery, health, host facts, metrics', () => {
  test('GET /v1 lists the routes; /v1/health answers with the agent pid and a request id', async () => {
    const routes = await api(agent.socket, 'GET', '/v1');
    assert.equal(routes.status, 200);
    for (const route of [
      'GET /v1/health',
      'GET /v1/cgroups/state',
      'POST /v1/cgroups/freeze',
      'POST /v1/checkpoints',
      'POST /v1/checkpoints/{id}/restore',
    ]) {
      assert.ok(routes.body.routes.includes(route), `${route} is listed`);
    }
    const health = await api(agent.socket, 'GET', '/v1/health', { headers: { 'X-Request-Id': 'probe-1' } });
    assert.equal(health.status, 200);
    assert.equal(health.body.status, 'ok');
    assert.equal(health.body.pid, agent.pid);
    assert.equal(health.headers['x-request-id'], 'probe-1');
    assert.match(String((await api(agent.socket, 'GET', '/v1/health')).headers['x-request-id']), /^[0-9a-f-]{36}$/);
  });

  test('GET /v1/host reports kernel, distribution, CPU, memory, image space, cgroup mounts and CRIU', async () => {
    const { status, body } = await api(agent.socket, 'GET', '/v1/host');
    assert.equal(status, 200);
    assert.equal(body.kernel, release());
    assert.ok(body.distro.name.length > 0);
    assert.ok(body.cpu.cores >= 1);
    assert.ok(body.memory.totalBytes > body.memory.availableBytes && body.memory.availableBytes > 0);
    assert.equal(body.imagesDir.path, agent.imagesDir);
    assert.ok(body.imagesDir.freeBytes > 0 && body.imagesDir.sizeBytes >= body.imagesDir.freeBytes);
    assert.ok(['unified', 'hybrid', 'legacy'].includes(body.cgroups.mode));
    assert.equal(body.criu.ok, true);
    assert.match(body.criu.version, /^\d+\.\d+/);
    assert.equal(body.criu.check.ok, true);
    // install-criu.sh's verdict, as recorded on this machine (npm run setup, or the guest's own run).
    assert.equal(body.criu.selfTest.recordPath, '/var/lib/agentd/criu-selftest.json');
    assert.ok(['passed', 'failed', 'stale', 'not run'].includes(body.criu.selfTest.status), body.criu.selfTest.status);
    if (body.criu.selfTest.status === 'passed') assert.equal(body.criu.selfTest.record.version, body.criu.version);
    assert.equal(body.agent.socket, agent.socket);
  });

  test('GET /v1/metrics is Prometheus text with requests, errors by code, durations and CHECKPOINTING cgroups', async () => {
    await api(agent.socket, 'GET', '/v1/no-such-route');
    const { status, headers, text } = await api(agent.socket, 'GET', '/v1/metrics');
    assert.equal(status, 200);
    assert.match(String(headers['content-type']), /^text\/plain; version=0\.0\.4/);
    assert.match(text, /^agentd_requests_total\{method="GET",route="\/v1\/health",status="200"\} \d+$/m);
    assert.match(text, /^agentd_errors_total\{code="ENOENT"\} \d+$/m);
    assert.match(text, /^# TYPE agentd_freeze_duration_seconds histogram$/m);
    assert.match(text, /^# TYPE agentd_checkpoint_duration_seconds histogram$/m);
    assert.match(text, /^agentd_checkpointing_cgroups 0$/m);
    // prom-client's own: process, heap and event loop, each with its HELP and TYPE.
    for (const [name, type] of [
      ['process_resident_memory_bytes', 'gauge'],
      ['process_cpu_seconds_total', 'counter'],
      ['nodejs_heap_size_used_bytes', 'gauge'],
      ['nodejs_eventloop_lag_seconds', 'gauge'],
      ['nodejs_eventloop_lag_p99_seconds', 'gauge'],
    ]) {
      assert.match(text, new RegExp(`^# HELP ${name} \\S.*\\n# TYPE ${name} ${type}\\n${name}(\\{[^}]*\\})? [0-9.e+-]+$`, 'm'), name);
    }
    assert.ok(Number(/^process_resident_memory_bytes (\d+)$/m.exec(text)?.[1]) > 10 << 20, "the agent's RSS, above 10 MB");
  });
});

for (const hierarchy of HIERARCHIES) {
  describe(`freezer routes on cgroup ${hierarchy}`, { skip: unavailable(hierarchy) }, () => {
    test('state, freeze, state, thaw: the kernel agrees at every step; absolute paths work too', async () => {
      const cgroup = lab.cgroup(hierarchy, 'routes');
      lab.spawnIn(cgroup, 'sleep', ['100000']);
      lab.spawnIn(cgroup, 'sleep', ['100000']);
      await lab.waitForProcesses(cgroup, 2);

      const state = await api(agent.socket, 'GET', `/v1/cgroups/state?cgroup=${encodeURIComponent(cgroup.path)}&hierarchy=${hierarchy}`);
      assert.equal(state.status, 200);
      assert.equal(state.body.cgroup, cgroup.path);
      assert.equal(state.body.hierarchy, hierarchy);
      assert.equal(state.body.path, cgroup.dir);
      assert.equal(state.body.state, 'THAWED');

      const frozen = await api(agent.socket, 'POST', '/v1/cgroups/freeze', { body: { cgroup: cgroup.path, hierarchy, timeoutMs: 5000 } });
      assert.equal(frozen.status, 200, frozen.text);
      assert.equal(frozen.body.state, 'FROZEN');
      assert.equal(kernelState(cgroup), 'FROZEN');

      const byDir = await api(agent.socket, 'GET', `/v1/cgroups/state?cgroup=${encodeURIComponent(cgroup.dir)}`);
      assert.equal(byDir.body.state, 'FROZEN');
      assert.equal(byDir.body.hierarchy, hierarchy);

      const thawed = await api(agent.socket, 'POST', '/v1/cgroups/thaw', { body: { cgroup: cgroup.dir } });
      assert.equal(thawed.status, 200, thawed.text);
      assert.equal(thawed.body.state, 'THAWED');
      assert.equal(kernelState(cgroup), 'THAWED');
      const metrics = (await api(agent.socket, 'GET', '/v1/metrics')).text;
      assert.match(metrics, /^agentd_freeze_duration_seconds_count [1-9]\d*$/m);

      // kill: answers once every process is gone, with the cgroup's status (in place, THAWED).
      const pids = lab.pidsOf(cgroup);
      assert.equal((await api(agent.socket, 'POST', '/v1/cgroups/freeze', { body: { cgroup: cgroup.path, hierarchy } })).status, 200);
      const killed = await api(agent.socket, 'POST', '/v1/cgroups/kill', { body: { cgroup: cgroup.path, hierarchy, timeoutMs: 5000 } });
      assert.equal(killed.status, 200, killed.text);
      assert.equal(killed.body.state, 'THAWED');
      assert.equal(killed.body.locked, false);
      assert.deepEqual(lab.pidsOf(cgroup), []);
      for (const pid of pids) assert.equal(existsSync(`/proc/${pid}`), false, `pid ${pid} is gone`);
    });
  });
}

describe('error codes and their HTTP statuses', () => {
  test('the table maps every error code, and agentd uses it', () => {
    assert.deepEqual(Object.keys(HTTP_STATUS).sort(), [...ERROR_CODES].sort());
    assert.equal(HTTP_STATUS.EINVAL, 400);
    assert.equal(HTTP_STATUS.ENOENT, 404);
    assert.equal(HTTP_STATUS.EBUSY, 409);
    assert.equal(HTTP_STATUS.ETIMEDOUT, 504);
    assert.equal(HTTP_STATUS.ENOSPC, 507);
    assert.equal(HTTP_STATUS.ECRIU, 500);
    assert.equal(HTTP_STATUS.EINTR, 503);
  });

  test('EINVAL 400: "..", the root cgroup, a NUL byte, a wrong hierarchy', async () => {
    const h = anyHierarchy();
    const cgroup = lab.cgroup(h, 'einval');
    for (const [name, body] of [
      ['dot-dot', { cgroup: `${cgroup.path}/../../etc` }],
      ['root', { cgroup: '/' }],
      ['nul', { cgroup: 'a\u0000b' }],
      ['hierarchy', { cgroup: cgroup.path, hierarchy: 'v3' }],
    ] as const) {
      const res = await api(agent.socket, 'POST', '/v1/cgroups/freeze', { body });
      assert.equal(res.status, 400, `${name}: ${res.text}`);
      assert.equal(res.body.error.code, 'EINVAL', name);
      assert.ok(res.body.error.message.length > 10, name);
    }
    assert.equal(kernelState(cgroup), 'THAWED');
  });

  test('ENOENT 404: a cgroup that does not exist, a checkpoint that does not exist', async () => {
    const missing = await api(agent.socket, 'GET', '/v1/cgroups/state?cgroup=agentd-test-no-such-cgroup');
    assert.equal(missing.status, 404);
    assert.equal(missing.body.error.code, 'ENOENT');
    assert.match(missing.body.error.message, /agentd-test-no-such-cgroup/);
    for (const [method, path] of [
      ['GET', '/v1/checkpoints/no-such-id'],
      ['DELETE', '/v1/checkpoints/no-such-id'],
      ['POST', '/v1/checkpoints/no-such-id/restore'],
    ] as const) {
      const res = await api(agent.socket, method, path, method === 'POST' ? { body: {} } : {});
      assert.equal(res.status, 404, `${method} ${path}: ${res.text}`);
      assert.equal(res.body.error.code, 'ENOENT');
    }
  });

  test('EBUSY 409: freeze and thaw while a cooperating tool holds the cgroup lock; nothing changes', async () => {
    const h = anyHierarchy();
    const cgroup = lab.cgroup(h, 'busy');
    lab.spawnIn(cgroup, 'sleep', ['100000']);
    await lab.waitForProcesses(cgroup, 1);
    // A freeze and thaw through the agent create the lock file; then a shell tool takes the lock.
    assert.equal((await api(agent.socket, 'POST', '/v1/cgroups/freeze', { body: { cgroup: cgroup.path, hierarchy: h } })).status, 200);
    assert.equal((await api(agent.socket, 'POST', '/v1/cgroups/thaw', { body: { cgroup: cgroup.path, hierarchy: h } })).status, 200);
    const lockFile = new CgroupControl({ runDir: agent.runDir }).lockPath(resolveCgroup(cgroup.path, { hierarchy: h }));
    const tool = await holdWithShellTool(lab, lockFile);
    try {
      for (const route of ['freeze', 'thaw']) {
        const res = await api(agent.socket, 'POST', `/v1/cgroups/${route}`, { body: { cgroup: cgroup.path, hierarchy: h } });
        assert.equal(res.status, 409, `${route}: ${res.text}`);
        assert.equal(res.body.error.code, 'EBUSY');
        assert.match(res.body.error.message, new RegExp(cgroup.path));
        assert.equal(kernelState(cgroup), 'THAWED');
      }
      const state = await api(agent.socket, 'GET', `/v1/cgroups/state?cgroup=${cgroup.path}&hierarchy=${h}`);
      assert.equal(state.status, 200, 'reading the state never needs the lock');
      assert.equal(state.body.locked, true);
    } finally {
      await killAndWait(tool);
    }
  });
});

describe('bad requests get 4xx and change nothing', () => {
  let cgroup: TestCgroup;
  const h = anyHierarchy();
  before(async () => {
    cgroup = lab.cgroup(h, 'bad-requests');
    lab.spawnIn(cgroup, 'sleep', ['100000']);
    await lab.waitForProcesses(cgroup, 1);
  });

  async function refused(
    label: string,
    method: string,
    path: string,
    options: Parameters<typeof api>[3],
    status: number,
    pattern?: RegExp,
  ) {
    const before = snapshot(cgroup);
    const res = await api(agent.socket, method, path, options);
    assert.equal(res.status, status, `${label}: ${res.status} ${res.text}`);
    assert.equal(res.body?.error?.code, status === 404 ? 'ENOENT' : 'EINVAL', `${label}: ${res.text}`);
    if (pattern) assert.match(res.body.error.message, pattern, label);
    assert.deepEqual(snapshot(cgroup), before, `${label} changed nothing`);
  }

  test('unknown routes 404, wrong methods 405 with Allow', async () => {
    await refused('unknown route', 'POST', '/v1/cgroups/explode', { body: { cgroup: cgroup.path } }, 404, /no such route/);
    await refused('unversioned', 'GET', '/health', {}, 404);
    await refused('trailing slash', 'GET', '/v1/health/', {}, 404);
    const res = await api(agent.socket, 'GET', '/v1/cgroups/freeze');
    assert.equal(res.status, 405);
    assert.equal(res.headers.allow, 'POST');
    await refused('DELETE on freeze', 'DELETE', '/v1/cgroups/freeze', {}, 405, /allowed: POST/);
  });

  test('malformed JSON, non-object bodies, wrong content type', async () => {
    const path = '/v1/cgroups/freeze';
    await refused('truncated JSON', 'POST', path, { body: `{"cgroup": "${cgroup.path}"` }, 400, /malformed JSON/);
    await refused('not JSON', 'POST', path, { body: 'cgroup=x' }, 400, /malformed JSON/);
    await refused('array', 'POST', path, { body: [cgroup.path] }, 400, /JSON object/);
    await refused('null', 'POST', path, { body: 'null' }, 400, /JSON object/);
    await refused(
      'form',
      'POST',
      path,
      { body: `cgroup=${cgroup.path}`, headers: { 'Content-Type': 'application/x-www-form-urlencoded' } },
      415,
      /application\/json/,
    );
  });

  test('unknown fields, missing fields, wrong types, unknown or repeated query parameters, bodies on GET', async () => {
    await refused(
      'unknown field',
      'POST',
      '/v1/cgroups/freeze',
      { body: { cgroup: cgroup.path, force: true } },
      400,
      /unknown field "force" \(allowed: cgroup, hierarchy, timeoutMs\)/,
    );
    await refused('missing cgroup', 'POST', '/v1/cgroups/freeze', { body: {} }, 400, /missing field "cgroup"/);
    await refused('number cgroup', 'POST', '/v1/cgroups/freeze', { body: { cgroup: 42 } }, 400, /"cgroup" must be a non-empty string/);
    await refused('timeout as string', 'POST', '/v1/cgroups/freeze', { body: { cgroup: cgroup.path, timeoutMs: '10' } }, 400, /timeoutMs/);
    await refused('negative timeout', 'POST', '/v1/cgroups/freeze', { body: { cgroup: cgroup.path, timeoutMs: -1 } }, 400, /timeoutMs/);
    await refused(
      'kill with a signal',
      'POST',
      '/v1/cgroups/kill',
      { body: { cgroup: cgroup.path, signal: 'TERM' } },
      400,
      /unknown field "signal" \(allowed: cgroup, hierarchy, timeoutMs\)/,
    );
    await refused(
      'kill by query',
      'POST',
      `/v1/cgroups/kill?cgroup=${cgroup.path}`,
      { body: { cgroup: cgroup.path } },
      400,
      /unknown query parameter "cgroup"/,
    );
    await refused('kill without a cgroup', 'POST', '/v1/cgroups/kill', { body: {} }, 400, /missing field "cgroup"/);
    await refused('cancel with a body', 'POST', '/v1/operations/x/cancel', { body: { now: true } }, 400, /take no body/);
    await refused(
      'thaw with timeout',
      'POST',
      '/v1/cgroups/thaw',
      { body: { cgroup: cgroup.path, timeoutMs: 5 } },
      400,
      /unknown field "timeoutMs"/,
    );
    await refused(
      'after policy',
      'POST',
      '/v1/checkpoints',
      { body: { cgroup: cgroup.path, after: 'later' } },
      400,
      /"after" must be one of prior, thawed, frozen, killed/,
    );
    await refused(
      'relative images dir',
      'POST',
      '/v1/checkpoints',
      { body: { cgroup: cgroup.path, imagesDir: 'here' } },
      400,
      /absolute path/,
    );
    await refused(
      'unknown query',
      'GET',
      `/v1/cgroups/state?cgroup=${cgroup.path}&verbose=1`,
      {},
      400,
      /unknown query parameter "verbose"/,
    );
    await refused('repeated query', 'GET', `/v1/cgroups/state?cgroup=${cgroup.path}&cgroup=x`, {}, 400, /given 2 times/);
    await refused('query on list', 'GET', '/v1/checkpoints?all=1', {}, 400, /takes no query parameters/);
    await refused('body on GET', 'GET', '/v1/health', { body: { x: 1 } }, 400, /take no body/);
    await refused('bad checkpoint id', 'GET', '/v1/checkpoints/..%2Fetc', {}, 400, /checkpoint id/);
    await refused('bad encoding', 'GET', '/v1/checkpoints/%E0%A4%A', {}, 400, /percent-encoding/);
  });

  test('oversized bodies are refused with 413, whether announced or streamed', async () => {
    const big = JSON.stringify({ cgroup: cgroup.path, pad: 'x'.repeat(70 * 1024) });
    await refused('announced', 'POST', '/v1/cgroups/freeze', { body: big }, 413, /limit/);
    const chunks = Array.from({ length: 40 }, () => Buffer.alloc(4096, 0x20));
    await refused('chunked', 'POST', '/v1/cgroups/freeze', { chunks, headers: { 'Content-Type': 'application/json' } }, 413, /limit/);
    await refused(
      'huge announced',
      'POST',
      '/v1/cgroups/freeze',
      { body: '{}', headers: { 'Content-Length': 1 << 30 } },
      413,
      /larger than/,
    );
  });

  test("Node's own HTTP client gets the 413 for a body of megabytes, never a broken pipe", async () => {
    // A client that writes its whole body before it reads (Node's http, most libraries) sees EPIPE
    // instead of our answer if agentd closes while the body is still arriving. Each request counts
    // as done once the answer is read and the body fully written, so a late EPIPE fails it too.
    const post = (body: string) =>
      new Promise<{ status: number; text: string }>((resolve, reject) => {
        let answer: { status: number; text: string } | undefined;
        let written = false;
        const settle = () => answer && written && resolve(answer);
        const req = httpRequest(
          {
            socketPath: agent.socket,
            method: 'POST',
            path: '/v1/cgroups/freeze',
            agent: false,
            headers: { 'Content-Type': 'application/json', 'Content-Length': Buffer.byteLength(body) },
          },
          (res) => {
            let text = '';
            res.setEncoding('utf8');
            res.on('data', (chunk: string) => (text += chunk));
            res.on('end', () => {
              answer = { status: res.statusCode ?? 0, text };
              settle();
            });
          },
        );
        req.on('error', reject);
        req.end(body, () => {
          written = true;
          settle();
        });
      });
    for (const megabytes of [1.5, 6]) {
      const body = JSON.stringify({ cgroup: cgroup.path, pad: 'x'.repeat(megabytes * 1024 * 1024) });
      for (let attempt = 1; attempt <= 12; attempt++) {
        const before = snapshot(cgroup);
        const reply = await post(body).catch((err: Error) => err);
        assert.ok(!(reply instanceof Error), `${megabytes} MB body, attempt ${attempt}: ${String(reply)}`);
        assert.equal(reply.status, 413, `${megabytes} MB body, attempt ${attempt}`);
        assert.match(reply.text, /larger than the 65536-byte limit/);
        assert.deepEqual(snapshot(cgroup), before);
      }
    }
  });

  test('malformed HTTP and oversized headers get a JSON 4xx; the agent keeps serving', async () => {
    const raw = (payload: string) =>
      new Promise<string>((resolve, reject) => {
        const socket = connect(agent.socket);
        let text = '';
        socket.on('data', (d) => (text += d.toString()));
        socket.on('end', () => resolve(text));
        socket.on('error', reject);
        socket.end(payload);
      });
    const before = snapshot(cgroup);
    const garbage = await raw('HELLO agentd\r\n\r\n');
    assert.match(garbage, /^HTTP\/1\.1 400 /);
    assert.match(garbage, /"code":"EINVAL"/);
    const headers = await raw(`GET /v1/health HTTP/1.1\r\nHost: x\r\nX-Big: ${'a'.repeat(20_000)}\r\n\r\n`);
    assert.match(headers, /^HTTP\/1\.1 431 /);
    assert.deepEqual(snapshot(cgroup), before);
    assert.equal((await api(agent.socket, 'GET', '/v1/health')).status, 200);
  });
});
