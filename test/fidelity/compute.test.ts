// Fidelity, computations: programs from Debian's archive checkpointed mid-work through a real agentd
// (its HTTP API on a private socket), on v1 and v2. What they prove:
// - xz -T2 compressing a generated file (a main thread and 2 compressing threads): checkpointed with
//   --after killed halfway through its output, restored with the same threads, it finishes, and its
//   .xz file is byte-identical to an uninterrupted run's of the same command on the same input;
// - a program CRIU cannot checkpoint (a process that strace traces: CRIU must trace every task it
//   dumps, and a task has one tracer) is refused with an error that says so in words, and comes out
//   of the attempt running, its cgroup as it was.
// The lab kills every process of the test cgroups and removes the files whether a test passes or fails.

import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdirSync, readFileSync, statSync, writeFileSync, existsSync } from 'node:fs';
import { join } from 'node:path';
import { describe, test } from 'node:test';
import { HIERARCHIES, pidAlive, unavailable, waitUntil, type TestCgroup } from '../helpers/lab.js';
import type { Json } from '../helpers/json.js';
import { api, withAgent } from '../daemon/agent.js';
import { generatedText, missing, PROGRAMS, threadCount, waitAllGone } from './programs.js';

const { lab, agent } = withAgent('fidelity-compute');

// 12 MiB in blocks of 1 MiB at preset 1: about 2 s of work for 2 threads here, 20 MiB resident.
const INPUT_BYTES = 12 << 20;
const XZ_ARGS = ['-T2', '--block-size=1MiB', '-1', '-k'];

let reference: Buffer | undefined;
/** The .xz an uninterrupted run of the same command writes for the same input (computed once). */
function uninterrupted(input: Buffer): Buffer {
  if (reference) return reference;
  const dir = lab.tempDir('xz-reference');
  const file = join(dir, 'input.txt');
  writeFileSync(file, input);
  const run = spawnSync(PROGRAMS.xz, [...XZ_ARGS, file], { stdio: ['ignore', 'ignore', 'pipe'] });
  assert.equal(run.status, 0, `the uninterrupted xz failed: ${run.stderr}`);
  reference = readFileSync(`${file}.xz`);
  return reference;
}

function comm(pid: number): string {
  return readFileSync(`/proc/${pid}/comm`, 'utf8').trim();
}

function readTracerPid(pid: number): number {
  return Number(/^TracerPid:\s+(\d+)/m.exec(readFileSync(`/proc/${pid}/status`, 'utf8'))?.[1]);
}

async function post(path: string, body: Record<string, unknown>): Promise<{ status: number; body: Json; text: string }> {
  return api(agent.socket, 'POST', path, { body });
}

function state(cgroup: TestCgroup): Promise<string> {
  return api(agent.socket, 'GET', `/v1/cgroups/state?cgroup=${encodeURIComponent(cgroup.path)}&hierarchy=${cgroup.hierarchy}`).then(
    (r) => r.body.kernelState,
  );
}

for (const hierarchy of HIERARCHIES) {
  describe(`computations from Debian, cgroup ${hierarchy}`, { skip: unavailable(hierarchy) }, () => {
    test(
      'xz -T2: checkpointed halfway (--after killed) and restored with its threads, its output is byte-identical to an uninterrupted run',
      { skip: missing('xz') },
      async () => {
        const input = generatedText(INPUT_BYTES);
        const expected = uninterrupted(input);
        const cgroup = lab.cgroup(hierarchy, 'xz');
        const dir = lab.tempDir('xz');
        const file = join(dir, 'input.txt');
        writeFileSync(file, input);
        const out = `${file}.xz`;
        lab.spawnIn(cgroup, PROGRAMS.xz, [...XZ_ARGS, file]);
        const [pid] = await lab.waitForProcesses(cgroup, 1);
        await waitUntil(
          'xz to write its first block and run 2 compressing threads',
          () => statSync(out).size > 0 && threadCount(pid) >= 3,
          20_000,
        );

        // Frozen, the thread count and the output hold still: what the checkpoint sees.
        const frozen = await post('/v1/cgroups/freeze', { cgroup: cgroup.path, hierarchy });
        assert.equal(frozen.status, 200, frozen.text);
        const threads = threadCount(pid);
        const partial = statSync(out).size;
        assert.ok(threads >= 3, `xz runs ${threads} threads`);
        assert.ok(partial < expected.length, `xz had written ${partial} of ${expected.length} bytes: it is mid-work`);

        const created = await post('/v1/checkpoints', { cgroup: cgroup.path, hierarchy, after: 'killed' });
        assert.equal(created.status, 201, created.text);
        assert.equal(created.body.processes, 1);
        await waitAllGone([pid], `xz (${pid}) to be killed`);
        assert.equal(statSync(out).size, partial, 'nothing wrote the output while it was checkpointed');

        // It was checkpointed FROZEN, so a plain restore leaves it FROZEN: it is to run on here.
        const restored = await post(`/v1/checkpoints/${created.body.id}/restore`, { after: 'thawed' });
        assert.equal(restored.status, 200, restored.text);
        assert.equal(restored.body.state, 'THAWED');
        assert.deepEqual(restored.body.pids, [pid]);
        assert.equal(threadCount(pid), threads, 'the same threads came back');
        await waitAllGone([pid], 'the restored xz to finish');
        const output = readFileSync(out);
        assert.equal(output.length, expected.length);
        assert.ok(output.equals(expected), 'the restored run wrote the same bytes as the uninterrupted one');
        assert.ok(existsSync(file), 'xz -k kept its input');
      },
    );

    test(
      'a process traced by strace cannot be checkpointed: ECRIU naming the tracer; it keeps running',
      { skip: missing('strace') },
      async () => {
        const cgroup = lab.cgroup(hierarchy, 'traced');
        const dir = lab.tempDir('traced');
        mkdirSync(join(dir, 'out'));
        const straced = lab.spawnIn(cgroup, PROGRAMS.strace, ['-f', '-o', join(dir, 'out', 'trace'), '/usr/bin/sleep', '1000'], {
          stdio: ['ignore', 'ignore', 'pipe'],
        });
        let straceSaid = '';
        straced.stderr?.on('data', (d: Buffer) => (straceSaid += d.toString()));
        let straceExit: string | undefined;
        straced.on('exit', (code, signal) => (straceExit = `${code ?? signal}`));
        // strace forks short-lived children of its own at start (probing ptrace): wait for the two that stay.
        let traced = 0;
        let tracer = 0;
        await waitUntil('strace to trace sleep', () => {
          traced = lab.pidsOf(cgroup).find((pid) => comm(pid) === 'sleep') ?? 0;
          tracer = traced ? readTracerPid(traced) : 0;
          return tracer > 0 && comm(tracer) === 'strace' && lab.pidsOf(cgroup).length === 2;
        });
        const pids = [tracer, traced].sort((a, b) => a - b);

        const res = await post('/v1/checkpoints', { cgroup: cgroup.path, hierarchy, after: 'killed' });
        assert.equal(res.status, 500, res.text);
        assert.equal(res.body.error.code, 'ECRIU');
        assert.match(
          res.body.error.message,
          new RegExp(`process ${traced} cannot be checkpointed: it is traced by pid ${tracer} \\(strace\\)`),
        );
        assert.match(res.body.error.message, /CRIU must trace every process it dumps .*detach the debugger or strace first/);
        assert.match(res.body.error.message, /\(CRIU: Error \(criu\/seize\.c:\d+\)/, 'what CRIU said is quoted after the reason');
        assert.equal(await state(cgroup), 'THAWED', 'the cgroup is as it was');
        const trace = () =>
          readFileSync(join(dir, 'out', 'trace'), 'utf8')
            .split('\n')
            .slice(-5)
            .join(' / ');
        assert.ok(
          pids.every(pidAlive),
          `strace and the traced process survived the attempt (strace exit ${straceExit}: ${straceSaid}; trace: ${trace()})`,
        );
        assert.deepEqual(
          lab.pidsOf(cgroup).sort((a, b) => a - b),
          pids,
        );
        const listed = await api(agent.socket, 'GET', '/v1/checkpoints');
        assert.deepEqual(
          listed.body.checkpoints.filter((c: { status: string; cgroup?: string }) => c.status === 'good' && c.cgroup === cgroup.path),
          [],
        );
      },
    );
  });
}
