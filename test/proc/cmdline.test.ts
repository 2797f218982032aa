// readArgs: a process in the middle of an execve is never taken for one without arguments; kernel
// threads, zombies and gone pids are answered at once.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { readFileSync } from 'node:fs';
import { readArgs, readChildren, readProcStat } from '../../src/proc/index.js';

const EXECS = 300;

test(`a shell that execs itself ${EXECS} times always reads with its arguments`, async (t) => {
  // Each round is an execve of sh in place, the last one of sleep: the same pid throughout, as a
  // wrapper exec'ing CRIU is.
  const script = 'if [ "$1" -gt 0 ]; then exec sh -c "$S" round $(($1 - 1)); fi; exec sleep 30';
  const child = spawn('sh', ['-c', script, 'round', String(EXECS)], { stdio: 'ignore', env: { ...process.env, S: script } });
  t.after(() => child.kill('SIGKILL'));
  await once(child, 'spawn');
  const pid = child.pid!;
  let reads = 0;
  let plainEmpty = 0;
  const deadline = Date.now() + 30_000;
  for (;;) {
    // What a plain read sees, for the figure only: whether the gap shows depends on the scheduler.
    try {
      if (readFileSync(`/proc/${pid}/cmdline`, 'utf8') === '') plainEmpty++;
    } catch {
      // gone: the next readArgs says so
    }
    const args = readArgs(pid);
    reads++;
    assert.ok(args !== undefined, `pid ${pid} went away`);
    assert.ok(args.length > 0, `pid ${pid} read with no arguments after ${reads} reads, in the middle of its execs`);
    if (args[0] === 'sleep') break;
    assert.equal(args[0], 'sh');
    assert.ok(Date.now() < deadline, `the shell had not reached sleep after 30 s (${args.join(' ')})`);
  }
  t.diagnostic(`${reads} reads across ${EXECS} execs; plain reads of cmdline found it empty ${plainEmpty} times`);
});

test('kernel threads and zombies have no arguments, a gone pid has none to read', async (t) => {
  assert.equal(readProcStat(2)?.comm, 'kthreadd');
  assert.deepEqual(readArgs(2), []);

  // A zombie nobody reaps: the shell starts `true` and execs sleep, which never waits for it.
  const parent = spawn('sh', ['-c', 'true & exec sleep 30'], { stdio: 'ignore' });
  t.after(() => parent.kill('SIGKILL'));
  await once(parent, 'spawn');
  let zombie: number | undefined;
  for (let i = 0; zombie === undefined && i < 5000; i++) {
    await new Promise((r) => setTimeout(r, 2));
    if (readProcStat(parent.pid!)?.comm !== 'sleep') continue;
    zombie = readChildren(parent.pid!).find((pid) => readProcStat(pid)?.state === 'Z');
  }
  assert.ok(zombie !== undefined, "the shell's child became a zombie under sleep");
  assert.deepEqual(readArgs(zombie), []);

  parent.kill('SIGKILL');
  await once(parent, 'exit');
  assert.equal(readArgs(parent.pid!), undefined);
});
