// Fidelity, an interactive program on a pseudo-terminal: Debian's python3 REPL, checkpointed with
// shellJob and --after killed through the Checkpointer library (the API's way, restore with
// "attach", is tested in test/terminal/), restored onto a new terminal, on v1
// and v2. What it proves: the REPL keeps its state (a variable set before the checkpoint) and goes
// on reading and answering on the new terminal. The lab kills the processes and removes the
// cgroups and files whether the test passes or fails.

import assert from 'node:assert/strict';
import { join } from 'node:path';
import { after, describe, test } from 'node:test';
import { CGEXEC, HIERARCHIES, Lab, pidAlive, unavailable, waitUntil } from '../helpers/lab.js';
import { checkpointerIn, refOf } from '../checkpoint/helpers.js';
import type { RestoredTerminal } from '../../src/checkpoint/index.js';
import { missing, PROGRAMS } from './programs.js';

const lab = new Lab('fidelity-tty');
after(() => lab.cleanup());

// The REPL's own environment: nothing of the runner's (a PYTHONSTARTUP, a fancy TERM) changes what it prints.
const REPL_ENV = { PATH: '/usr/bin:/bin', HOME: '/root', TERM: 'dumb', LANG: 'C.UTF-8' };

for (const hierarchy of HIERARCHIES) {
  describe(`an interactive program on a terminal, cgroup ${hierarchy}`, { skip: unavailable(hierarchy) }, () => {
    test(
      'python3 REPL: checkpointed (shellJob, --after killed), restored onto a new terminal, it remembers and answers there',
      { skip: missing('python3') },
      async () => {
        const { spawn } = await import('node-pty');
        const cgroup = lab.cgroup(hierarchy, 'repl');
        // node-pty makes the REPL a session leader with the pty as its controlling terminal, as a login shell's job is.
        const original = spawn(CGEXEC, [join(cgroup.dir, 'cgroup.procs'), PROGRAMS.python3, '-q', '-i'], {
          cols: 80,
          rows: 24,
          env: REPL_ENV,
        });
        lab.track(original.pid);
        let before = '';
        original.onData((d) => (before += d));
        await waitUntil('the first prompt', () => before.includes('>>> '), 20_000);
        original.write('x = 6 * 7\r');
        original.write('print("before", x * 1000)\r');
        await waitUntil('the REPL to answer', () => before.includes('before 42000'), 20_000);
        await waitUntil('the next prompt', () => before.trimEnd().endsWith('>>>'), 20_000);
        const [pid] = await lab.waitForProcesses(cgroup, 1);

        const checkpointer = checkpointerIn(lab);
        const summary = await checkpointer.checkpoint(refOf(cgroup), { after: 'killed', shellJob: true });
        assert.equal(summary.processes, 1);
        await waitUntil(`the REPL (${pid}) to be killed`, () => !pidAlive(pid));
        original.kill();

        let terminal: RestoredTerminal | undefined;
        let printed = '';
        const restored = await checkpointer.restore(
          summary.id,
          {},
          {
            onTerminal: (t) => {
              terminal = t;
              t.onData((d) => (printed += d));
            },
          },
        );
        assert.deepEqual(restored.pids, [pid]);
        assert.ok(terminal, 'the restore handed over a new terminal');
        assert.deepEqual(lab.pidsOf(cgroup), [pid]);

        terminal.write('print("after", x + 1)\r');
        await waitUntil('the restored REPL to answer on the new terminal', () => printed.includes('after 43'), 20_000);
        terminal.write('y = [n * n for n in range(5)]\r');
        terminal.write('print("squares", y, x)\r');
        await waitUntil('a second answer', () => printed.includes('squares [0, 1, 4, 9, 16] 42'), 20_000);

        // Leaving the REPL ends it, and with it the CRIU that held the terminal.
        terminal.write('raise SystemExit(7)\r');
        await waitUntil('the REPL to exit', () => !pidAlive(pid), 20_000);
        const exit = await terminal.exited;
        assert.equal(typeof exit.exitCode, 'number');
      },
    );
  });
}
