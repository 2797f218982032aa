// A shell job through agentctl, with node-pty on both sides: the job (bash reading lines) on a pty
// of its own before the checkpoint, and agentctl itself run on a pty by the test, as an operator's
// terminal. `agentctl checkpoint --shell-job --after killed` warns on stderr how to get the job back;
// `agentctl restore` without --attach is refused (exit 2) and changes nothing; `agentctl restore
// --attach` connects the test's terminal to the job's: keys reach it, its answers come back, a
// window change of agentctl's terminal reaches it, Ctrl-] detaches (exit 0, the job runs on);
// `agentctl attach` gets it back (a second attach meanwhile is refused, exit 4), and the job's
// exit ends the session with a message. The lab kills every process and removes every cgroup.

import assert from 'node:assert/strict';
import { test } from 'node:test';
import type { IPty } from 'node-pty';
import { anyHierarchy, pidAlive, waitUntil } from '../helpers/lab.js';
import { AGENTCTL, agentctl, api, withAgent } from '../daemon/agent.js';
import { startLineReader } from './client.js';

const { lab, agent } = withAgent('attach-cli');

/** agentctl on a terminal of its own, as an operator types it; everything it shows, stdout and stderr. */
async function onTerminal(args: string[], size: { cols: number; rows: number }) {
  const { spawn } = await import('node-pty');
  const pty: IPty = spawn(process.execPath, [AGENTCTL, '--socket', agent.socket, ...args], {
    ...size,
    env: { PATH: process.env.PATH ?? '/usr/bin:/bin', TERM: 'xterm' },
  });
  lab.track(pty.pid);
  let shown = '';
  pty.onData((d) => (shown += d));
  const exited = new Promise<number>((resolve) => pty.onExit((e) => resolve(e.exitCode)));
  return {
    pty,
    shown: () => shown,
    exited,
    async waitFor(pattern: RegExp, from = 0): Promise<void> {
      await waitUntil(`${pattern} on agentctl's terminal`, () => pattern.test(shown.slice(from)), 20_000).catch((err: Error) => {
        throw new Error(`${err.message}; it shows: ${JSON.stringify(shown.slice(from).slice(-400))}`);
      });
    },
  };
}

/** Waits until agentd has resized the job's terminal (the size reaches it before the next keys do). */
async function waitForSize(cgroup: string, hierarchy: string, cols: number, rows: number): Promise<void> {
  const path = `/v1/cgroups/terminal?cgroup=${encodeURIComponent(cgroup)}&hierarchy=${hierarchy}`;
  const deadline = Date.now() + 20_000;
  for (;;) {
    const status = await api(agent.socket, 'GET', path);
    if (status.body?.cols === cols && status.body?.rows === rows) return;
    if (Date.now() > deadline) throw new Error(`the terminal never became ${cols}x${rows}: ${status.text}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

test('agentctl: checkpoint --shell-job --after killed warns; restore --attach, keys, resize, Ctrl-] detach, attach, exit', async () => {
  const hierarchy = anyHierarchy();
  const cgroup = lab.cgroup(hierarchy, 'job');
  const { pid, pty: original } = await startLineReader(lab, cgroup, 'one');

  const sock = ['--socket', agent.socket];
  const made = await agentctl([...sock, 'checkpoint', cgroup.path, '--hierarchy', hierarchy, '--shell-job', '--after', 'killed', '--json']);
  assert.equal(made.code, 0, made.stderr);
  const id: string = JSON.parse(made.stdout).id;
  assert.match(made.stderr, new RegExp(`^agentctl: warning: .*--shell-job.*--after killed.*agentctl restore ${id} --attach`, 'm'));
  await waitUntil(`the job (${pid}) to be killed`, () => !pidAlive(pid));
  original.kill();

  const refused = await agentctl([...sock, 'restore', id]);
  assert.equal(refused.code, 2, refused.stderr);
  assert.match(
    refused.stderr,
    new RegExp(`^agentctl: EINVAL: checkpoint ${id} was taken with --shell-job: .*restore it with --attach`, 'm'),
  );
  assert.deepEqual(lab.pidsOf(cgroup), []);

  const restoring = await onTerminal(['restore', id, '--attach'], { cols: 90, rows: 25 });
  await restoring.waitFor(new RegExp(`restored ${id} into ${hierarchy}:${cgroup.path}: pid ${pid} .*attached \\(Ctrl-\\] detaches\\)`));
  assert.deepEqual(lab.pidsOf(cgroup), [pid]);
  restoring.pty.write('hello\r');
  await restoring.waitFor(/line 2: hello/);
  restoring.pty.write('size\r');
  await restoring.waitFor(/size 25 90 at 3/);
  // agentctl's terminal changes size: agentctl gets SIGWINCH and passes the size on.
  restoring.pty.resize(110, 35);
  await waitForSize(cgroup.path, hierarchy, 110, 35);
  restoring.pty.write('size\r');
  await restoring.waitFor(/winch 35 110\r+\nsize 35 110 at 4/);

  restoring.pty.write('\x1d');
  assert.equal(await restoring.exited, 0);
  assert.match(
    restoring.shown(),
    new RegExp(`detached from ${hierarchy}:${cgroup.path}; the job runs on.*agentctl attach ${hierarchy}:${cgroup.path}`),
  );
  assert.ok(pidAlive(pid), 'the job runs on after Ctrl-]');
  // While attached the job's bytes reach the terminal as they are: its pty made the "\r\n", agentctl's adds no "\r".
  const shown = restoring.shown();
  const session = shown.slice(shown.indexOf('attached ('), shown.indexOf('size 35 110 at 4') + 'size 35 110 at 4\r\n'.length);
  assert.match(session, /line 2: hello\r\n/);
  assert.doesNotMatch(session, /\r\r\n/);

  const attached = await onTerminal(['attach', cgroup.path, '--hierarchy', hierarchy], { cols: 70, rows: 20 });
  await attached.waitFor(new RegExp(`attached to ${hierarchy}:${cgroup.path} \\(pid ${pid}\\); Ctrl-\\] detaches`));
  // What the job wrote before is shown again; the attach gave it this terminal's size.
  await attached.waitFor(/size 35 110 at 4/);
  const mark = attached.shown().length;
  attached.pty.write('size\r');
  await attached.waitFor(/winch 20 70\r+\nsize 20 70 at 5/, mark);

  const second = await agentctl([...sock, 'attach', cgroup.path, '--hierarchy', hierarchy]);
  assert.equal(second.code, 4, second.stderr);
  assert.match(second.stderr, /^agentctl: EBUSY: the terminal of .* is attached to agentctl pid \d+/m);

  attached.pty.write('quit 3\r');
  await attached.waitFor(/bye at 6/, mark);
  assert.equal(await attached.exited, 0);
  assert.match(
    attached.shown(),
    new RegExp(`agentctl: the job on ${hierarchy}:${cgroup.path} \\(pid ${pid}\\) ended and its terminal is closed`),
  );
  await waitUntil('the job to be gone', () => !pidAlive(pid));

  const late = await agentctl([...sock, 'attach', cgroup.path, '--hierarchy', hierarchy]);
  assert.equal(late.code, 3, late.stderr);
  assert.match(late.stderr, /^agentctl: ENOENT: the job on .* ended/m);
});
