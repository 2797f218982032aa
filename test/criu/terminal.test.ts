// A process on a terminal: it dumps only with --shell-job and restores only onto a terminal.

import assert from 'node:assert/strict';
import { mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { isAgentError } from '../../src/errors/index.js';
import { findCriu, runCriuDump, runCriuRestore, startCriuRestoreOnTerminal, type CriuInfo } from '../../src/criu/index.js';
import {
  Cleanup,
  hierarchyRoot,
  sleep,
  startCounterOnTerminal,
  TestCgroup,
  waitGone,
  type TerminalCounter,
} from '../../fixtures/criu/harness.js';

const h = hierarchyRoot('v2') ? 'v2' : 'v1';
const TIMEOUT_MS = 60_000;

describe(`CRIU and terminals (cgroup ${h})`, () => {
  const cleanup = new Cleanup();
  let criu: CriuInfo;
  let cg: TestCgroup;
  let counter: TerminalCounter;
  let imagesDir: string;
  let frozenAt = 0;

  before(async () => {
    criu = await findCriu();
    cg = cleanup.cgroup(TestCgroup.create(h, 'tty'));
    const work = cleanup.tempDir('tty');
    imagesDir = join(work, 'images');
    mkdirSync(imagesDir);
    counter = await startCounterOnTerminal(cg, join(work, 'count'));
    cleanup.pid(counter.pid);
  });
  after(() => cleanup.run());

  test('without --shell-job the dump fails, quoting CRIU; with it, it succeeds', async () => {
    await counter.reach(20);
    assert.match(counter.output(), /tick 10/);
    await cg.freeze();
    frozenAt = counter.read();
    const common = { criuPath: criu.path, pid: counter.pid, freezeCgroup: cg.dir, timeoutMs: TIMEOUT_MS };

    const refused = join(imagesDir, '..', 'refused');
    mkdirSync(refused);
    await assert.rejects(runCriuDump({ ...common, imagesDir: refused }), (err: unknown) => {
      assert.ok(isAgentError(err, 'ECRIU'));
      assert.match(err.message, /Found slave peer index \d+ without correspond master peer/);
      return true;
    });
    assert.equal(cg.state(), 'FROZEN');

    const result = await runCriuDump({ ...common, imagesDir, shellJob: true });
    assert.ok(result.args.includes('--shell-job'));
    assert.equal(cg.state(), 'FROZEN');
    assert.equal(counter.read(), frozenAt);
  });

  test('a detached restore has no terminal to give: ECRIU quoting CRIU', async () => {
    assert.ok(frozenAt > 0, 'needs the dump above');
    process.kill(counter.pid, 'SIGKILL');
    cg.thaw();
    await waitGone(counter.pid);
    await assert.rejects(
      runCriuRestore({ criuPath: criu.path, imagesDir, shellJob: true, logName: 'restore-detached.log', timeoutMs: TIMEOUT_MS }),
      (err: unknown) => {
        assert.ok(isAgentError(err, 'ECRIU'));
        assert.match(err.message, /Don't have tty to inherit session from/);
        return true;
      },
    );
  });

  test('restored onto a new terminal, it prints there and counts on; CRIU exits with it', async () => {
    assert.ok(frozenAt > 0, 'needs the dump above');
    await waitGone(counter.pid);
    const restored = await startCriuRestoreOnTerminal({ criuPath: criu.path, imagesDir, timeoutMs: TIMEOUT_MS });
    cleanup.pid(restored.pid);
    cleanup.pid(restored.criuPid);
    assert.equal(restored.pid, counter.pid);
    assert.ok(!restored.args.includes('-d'));
    assert.ok(cg.procs().includes(restored.pid));

    let printed = '';
    restored.terminal.onData((d) => (printed += d));
    const value = await counter.reach(frozenAt + 25);
    assert.ok(value > frozenAt);
    await sleep(50);
    assert.match(printed, /tick \d+/, 'nothing arrived on the new terminal');
    const firstTick = Number(/tick (\d+)/.exec(printed)![1]);
    assert.ok(firstTick > frozenAt, `first tick ${firstTick} is not after ${frozenAt}`);

    process.kill(restored.pid, 'SIGKILL');
    const exit = await restored.exited;
    assert.equal(typeof exit.exitCode, 'number');
    await waitGone(restored.pid);
  });
});
