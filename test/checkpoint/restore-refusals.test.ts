// Restores that are refused: every check (checksums, saved pids free, target cgroup usable) comes
// before anything changes, so a refused restore leaves the host as it found it, and no cgroup it
// would have restored into is created. Saved pids held by live processes are refused at once,
// naming each holder; only a zombie (about to be reaped) is waited for, and the wait is announced.

import { test, describe, after } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, readFileSync, rmdirSync } from 'node:fs';
import { join } from 'node:path';
import { openFreezer } from '../../src/cgroup/index.js';
import { isAgentError } from '../../src/errors/index.js';
import type { ProgressEvent } from '../../src/checkpoint/index.js';
import { CGEXEC, HIERARCHIES, Lab, processState, unavailable, waitUntil, workload } from '../helpers/lab.js';
import { checkpointerIn, countingTree, refOf, rejectsWith } from './helpers.js';

const lab = new Lab('restore-refused');
const strays: string[] = [];
after(async () => {
  // A cgroup the code under test made by mistake is not the lab's: remove it (innermost first) so
  // that the lab can remove its own.
  for (const dir of strays.sort((a, b) => b.length - a.length)) if (existsSync(dir)) rmdirSync(dir);
  await lab.cleanup();
});

/** A cgroup path under the lab's prefix that does not exist yet: its directory and those of its missing parents. */
function unmade(hierarchy: (typeof HIERARCHIES)[number], name: string): { path: string; dir: string; dirs: string[] } {
  const path = `${lab.prefix}/${name}`;
  const root = lab.mount(hierarchy);
  const parts = name.split('/');
  const dirs = parts.map((_, i) => join(root, lab.prefix, ...parts.slice(0, i + 1))).filter((dir) => !existsSync(dir));
  strays.push(...dirs);
  return { path, dir: join(root, path), dirs };
}

/** The restore's error, or a failure when it succeeded; and the progress events it sent. */
async function refusal(
  run: (onProgress: (e: ProgressEvent) => void) => Promise<unknown>,
): Promise<{ err: Error & { code: string }; events: ProgressEvent[] }> {
  const events: ProgressEvent[] = [];
  try {
    await run((e) => events.push(e));
  } catch (err) {
    assert.ok(isAgentError(err), `expected an AgentError, got ${String(err)}`);
    return { err, events };
  }
  throw new Error('the restore succeeded; it should have been refused');
}

const comm = (pid: number): string => readFileSync(`/proc/${pid}/comm`, 'utf8').trim();

for (const hierarchy of HIERARCHIES) {
  describe(`refused restores, cgroup ${hierarchy}`, { skip: unavailable(hierarchy) }, () => {
    test('saved pids taken by running processes: EBUSY, and the new target cgroup (and its parent) are not created', async () => {
      const { cgroup, pids } = await countingTree(lab, hierarchy, 'still-running');
      const checkpointer = checkpointerIn(lab);
      const summary = await checkpointer.checkpoint(refOf(cgroup), { after: 'thawed' });
      const target = unmade(hierarchy, 'new-parent/new-target');
      await assert.rejects(checkpointer.restore(summary.id, { cgroup: target.path }), rejectsWith('EBUSY', new RegExp(`${pids[0]}`)));
      for (const dir of target.dirs) assert.equal(existsSync(dir), false, `${dir} was not created`);
      assert.deepEqual(
        lab.pidsOf(cgroup).sort((a, b) => a - b),
        pids,
        'the originals run on, untouched',
      );
      assert.equal(checkpointer.control.status(refOf(cgroup)).locked, false);
    });

    test('a new target under a frozen parent: EBUSY naming the parent, nothing created, nothing restored', async () => {
      const { cgroup, pids } = await countingTree(lab, hierarchy, 'to-move');
      const checkpointer = checkpointerIn(lab);
      const summary = await checkpointer.checkpoint(refOf(cgroup), { after: 'killed' });
      const parent = lab.cgroup(hierarchy, 'frozen-parent');
      const freezer = openFreezer(refOf(parent));
      try {
        await freezer.freeze();
        const target = unmade(hierarchy, 'frozen-parent/child');
        await assert.rejects(
          checkpointer.restore(summary.id, { cgroup: target.path }),
          rejectsWith('EBUSY', new RegExp(`${hierarchy}:${parent.path} is FROZEN`)),
        );
        for (const dir of target.dirs) assert.equal(existsSync(dir), false, `${dir} was not created`);
        for (const pid of pids) assert.equal(existsSync(`/proc/${pid}`), false, `pid ${pid} was not restored`);
      } finally {
        await freezer.thaw();
        freezer.close();
      }
      // The same checkpoint restores once the parent runs again: the refusal took nothing away.
      const target = unmade(hierarchy, 'frozen-parent/child');
      const restored = await checkpointer.restore(summary.id, { cgroup: target.path });
      assert.deepEqual(
        [...restored.pids].sort((a, b) => a - b),
        pids,
      );
      assert.deepEqual(
        lab.pidsOf({ hierarchy, path: target.path, dir: target.dir }).sort((a, b) => a - b),
        pids,
      );
      await lab.killIn({ hierarchy, path: target.path, dir: target.dir });
    });

    test('saved pids held by live processes: EBUSY at once, naming each pid, its command and its cgroup; the hint fits --after thawed', async () => {
      const { cgroup, pids } = await countingTree(lab, hierarchy, 'held');
      const checkpointer = checkpointerIn(lab);
      const summary = await checkpointer.checkpoint(refOf(cgroup), { after: 'thawed' });
      const { err, events } = await refusal((onProgress) => checkpointer.restore(summary.id, {}, { onProgress }));
      assert.equal(err.code, 'EBUSY', err.message);
      for (const pid of pids)
        assert.ok(
          err.message.includes(`pid ${pid}: ${comm(pid)} in cgroup ${hierarchy}:${cgroup.path}`),
          `${pid} named in: ${err.message}`,
        );
      assert.match(err.message, /taken with --after thawed.*--after killed/);
      assert.deepEqual(
        [...new Set(events.map((e) => e.stage))], // verify reports its bytes as it goes: one stage, several events
        ['verify'],
        'nothing was waited for',
      );
    });

    test('saved pids held by an earlier restore of an --after killed checkpoint: EBUSY at once, without suggesting --after killed', async () => {
      const { cgroup, pids } = await countingTree(lab, hierarchy, 'restored-twice');
      const checkpointer = checkpointerIn(lab);
      const summary = await checkpointer.checkpoint(refOf(cgroup), { after: 'killed' });
      await checkpointer.restore(summary.id);
      const { err, events } = await refusal((onProgress) => checkpointer.restore(summary.id, {}, { onProgress }));
      assert.equal(err.code, 'EBUSY', err.message);
      for (const pid of pids)
        assert.ok(
          err.message.includes(`pid ${pid}: ${comm(pid)} in cgroup ${hierarchy}:${cgroup.path}`),
          `${pid} named in: ${err.message}`,
        );
      assert.match(err.message, /taken with --after killed/);
      assert.doesNotMatch(err.message, /checkpoint with --after killed/);
      assert.deepEqual(
        [...new Set(events.map((e) => e.stage))], // verify reports its bytes as it goes: one stage, several events
        ['verify'],
        'nothing was waited for',
      );
    });

    test('a saved pid held by a zombie that is reaped a moment later: the restore says it waits, then restores', async () => {
      const cgroup = lab.cgroup(hierarchy, 'zombie');
      // Its parent does not reap it until told to: once killed, it stays a zombie holding its pid.
      const parent = lab.spawn(workload('zombie-parent.pl'), [CGEXEC, join(cgroup.dir, 'cgroup.procs'), 'sleep', '100000']);
      const [pid] = await lab.waitForProcesses(cgroup, 1);
      await waitUntil('the child to run sleep', () => comm(pid) === 'sleep');
      const checkpointer = checkpointerIn(lab);
      // Killed by hand after the checkpoint, as an operator would (--after killed waits until the
      // pids are gone, so it never leaves a zombie behind).
      const summary = await checkpointer.checkpoint(refOf(cgroup), { after: 'thawed' });
      process.kill(pid, 'SIGKILL');
      await waitUntil('the killed child to be a zombie', () => processState(pid) === 'Z');
      const parentComm = comm(parent.pid!);
      const waits: string[] = [];
      const restored = await checkpointer.restore(
        summary.id,
        {},
        {
          onProgress: (e) => {
            if (e.stage !== 'pids') return;
            waits.push(e.message ?? '');
            if (waits.length === 1) process.kill(parent.pid!, 'SIGUSR1'); // now the parent reaps it
          },
        },
      );
      assert.deepEqual(restored.pids, [pid]);
      assert.equal(waits.length >= 1, true, 'the wait was announced');
      assert.match(
        waits[0],
        new RegExp(`^waiting for zombies to be reaped, to free their pids: pid ${pid}: a zombie of ${parent.pid} \\(${parentComm}\\)`),
      );
      assert.deepEqual(lab.pidsOf(cgroup), [pid]);
      await lab.killIn(cgroup);
    });
  });
}
