// Restores that are refused: every check (checksums, saved pids free, target cgroup usable) comes
// before anything changes, so a refused restore leaves the host as it found it, and no cgroup it
// would have restored into is created.

import { test, describe, after } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, rmdirSync } from 'node:fs';
import { join } from 'node:path';
import { openFreezer } from '../../src/cgroup/index.js';
import { isAgentError } from '../../src/errors/index.js';
import { HIERARCHIES, Lab, unavailable } from '../helpers/lab.js';
import { checkpointerIn, countingTree, refOf } from './helpers.js';

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

function rejectsWith(code: string, pattern: RegExp) {
  return (err: unknown) => {
    assert.ok(isAgentError(err), `expected an AgentError, got ${String(err)}`);
    assert.equal(err.code, code, err.message);
    assert.match(err.message, pattern);
    return true;
  };
}

for (const hierarchy of HIERARCHIES) {
  describe(`refused restores, cgroup ${hierarchy}`, { skip: unavailable(hierarchy) }, () => {
    test('saved pids taken by running processes: EBUSY, and the new target cgroup (and its parent) are not created', async () => {
      const { cgroup, pids } = await countingTree(lab, hierarchy, 'still-running');
      const checkpointer = checkpointerIn(lab);
      const summary = await checkpointer.checkpoint(refOf(cgroup), { after: 'thawed' });
      const target = unmade(hierarchy, 'new-parent/new-target');
      await assert.rejects(checkpointer.restore(summary.id, { cgroup: target.path }), rejectsWith('EBUSY', new RegExp(`${pids[0]}`)));
      for (const dir of target.dirs) assert.equal(existsSync(dir), false, `${dir} was not created`);
      assert.deepEqual(lab.pidsOf(cgroup).sort((a, b) => a - b), pids, 'the originals run on, untouched');
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
      assert.deepEqual([...restored.pids].sort((a, b) => a - b), pids);
      assert.deepEqual(lab.pidsOf({ hierarchy, path: target.path, dir: target.dir }).sort((a, b) => a - b), pids);
      await lab.killIn({ hierarchy, path: target.path, dir: target.dir });
    });
  });
}
