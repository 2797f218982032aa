// A checkpoint that an operation is reading (a restore) is in use: deleting it, or restoring it a
// second time, is refused with EBUSY naming the operation until it is done. Before this rule a
// delete during a restore succeeded and the restore then failed on the missing image files.

import { test, describe, after } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import { isAgentError } from '../../src/errors/index.js';
import { HIERARCHIES, Lab, unavailable } from '../helpers/lab.js';
import { checkpointerIn, countingTree, refOf } from './helpers.js';

const lab = new Lab('ckpt-in-use');
after(() => lab.cleanup());

/** Runs fn (sync or async) and settles with its error, or undefined when it succeeded. */
async function errorOf(fn: () => unknown): Promise<unknown> {
  try {
    await fn();
    return undefined;
  } catch (err) {
    return err;
  }
}

for (const hierarchy of HIERARCHIES) {
  describe(`checkpoints in use, cgroup ${hierarchy}`, { skip: unavailable(hierarchy) }, () => {
    test('while a checkpoint is being restored, delete and a second restore of it get EBUSY naming the restore; afterwards delete works', async () => {
      const { cgroup, pids } = await countingTree(lab, hierarchy, 'in-use');
      const checkpointer = checkpointerIn(lab);
      const summary = await checkpointer.checkpoint(refOf(cgroup), { after: 'killed' });

      let deleting: Promise<unknown> | undefined;
      let restoringAgain: Promise<unknown> | undefined;
      const restored = await checkpointer.restore(
        summary.id,
        { requestId: 'first-restore' },
        {
          onProgress: (e) => {
            // The first event (verify) comes before any image file is read: the delete runs right then.
            if (e.stage !== 'verify' || deleting) return;
            deleting = errorOf(() => checkpointer.delete(summary.id));
            restoringAgain = errorOf(() => checkpointer.restore(summary.id, { requestId: 'second-restore' }));
          },
        },
      );
      assert.deepEqual(
        [...restored.pids].sort((a, b) => a - b),
        pids,
        'the restore was not disturbed',
      );

      const refusal = new RegExp(`^checkpoint ${summary.id} is being restored \\(request first-restore\\); try again when it is done$`);
      for (const [what, pending] of [
        ['delete', deleting],
        ['second restore', restoringAgain],
      ] as const) {
        const err = await pending;
        assert.ok(isAgentError(err, 'EBUSY'), `${what}: expected EBUSY, got ${String(err)}`);
        assert.match(err.message, refusal, what);
      }
      assert.ok(existsSync(summary.dir), 'the image is still there');

      // Done: the claim is gone, also after a restore that failed (its pids are taken now).
      const again = await errorOf(() => checkpointer.restore(summary.id));
      assert.ok(isAgentError(again), String(again));
      assert.doesNotMatch(again.message, /being restored/);
      await checkpointer.delete(summary.id);
      assert.equal(existsSync(summary.dir), false);
      assert.deepEqual(checkpointer.list(), []);
    });
  });
}
