// The order of a checkpoint whose policy lets the workload run again (`--after thawed`, `prior`
// from THAWED): the thaw comes right after the consistency verdict, the checksums, manifest and
// rename after it (src/checkpoint/dump-flow.ts, docs/freezer.md "The image after the thaw").
// Observed through the progress stream, which the flow calls synchronously: at the `manifest`
// stage the test holds the flow and watches the workload's counter, with the real CRIU on real
// cgroups.

import { test, describe, after } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, readdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { openFreezer } from '../../src/cgroup/index.js';
import { isAgentError } from '../../src/errors/index.js';
import { HIERARCHIES, Lab, pidAlive, sleepSync, unavailable, workload } from '../helpers/lab.js';
import { checkpointerIn, counterValue, refOf, waitForCount } from './helpers.js';

const lab = new Lab('after-thaw');
after(() => lab.cleanup());

/** Blocks (the flow is inside its progress call) until the counter moves, at most 10 s; whether it moved. */
function counterMovesWhileHeld(file: string): boolean {
  const from = counterValue(file);
  for (let waited = 0; waited < 10_000; waited += 20) {
    if (counterValue(file) > from) return true;
    sleepSync(20);
  }
  return false;
}

function partialsIn(root: string): string[] {
  return readdirSync(root).filter((n) => n.startsWith('.partial-'));
}

for (const hierarchy of HIERARCHIES) {
  describe(`after the thaw, cgroup ${hierarchy}`, { skip: unavailable(hierarchy) }, () => {
    test('--after thawed: the workload counts again before the manifest is written; the image is published only after', async () => {
      const cgroup = lab.cgroup(hierarchy, 'order');
      const dir = lab.tempDir('order');
      lab.spawnIn(cgroup, workload('counter-tree.pl'), [dir, '0']);
      await lab.waitForProcesses(cgroup, 1);
      await waitForCount(join(dir, 'root'));
      const images = lab.tempDir('images-order');
      const checkpointer = checkpointerIn(lab, undefined, [images]);
      const stages: string[] = [];
      const atManifest: { moved?: boolean; partials?: string[]; manifestWritten?: boolean; good?: number } = {};
      const summary = await checkpointer.checkpoint(
        refOf(cgroup),
        { after: 'thawed', imagesDir: images },
        {
          onProgress: (e) => {
            stages.push(e.stage);
            if (e.stage !== 'manifest') return;
            atManifest.moved = counterMovesWhileHeld(join(dir, 'root'));
            atManifest.partials = partialsIn(images);
            atManifest.manifestWritten = atManifest.partials.some((p) => existsSync(join(images, p, 'manifest.json')));
            atManifest.good = checkpointer.list().filter((c) => c.status === 'good').length;
          },
        },
      );
      assert.deepEqual([...new Set(stages)], ['preflight', 'freeze', 'lock', 'dump', 'verify', 'policy', 'manifest', 'release', 'done']);
      assert.equal(atManifest.moved, true, 'the counter advanced while the flow stood at the manifest stage');
      assert.equal(atManifest.partials?.length, 1, 'the image was still in its .partial- directory');
      assert.equal(atManifest.manifestWritten, false);
      assert.equal(atManifest.good, 0, 'nothing listed good before the manifest');

      assert.equal(summary.finalState, 'THAWED');
      const manifest = checkpointer.show(summary.id);
      const t = manifest.timings;
      assert.ok(t.hashMs !== undefined && t.publishMs !== undefined, 'hashMs and publishMs recorded');
      assert.ok(
        t.frozenWindowMs <= t.totalMs - t.hashMs,
        `the window (${t.frozenWindowMs} ms) ended before the checksums (${t.hashMs} ms) began`,
      );
      assert.deepEqual(
        checkpointer.list().map((c) => [c.id, c.status]),
        [[summary.id, 'good']],
      );
      assert.deepEqual(partialsIn(images), []);
    });

    test('a failure after the thaw leaves the workload running (even one that was frozen before) and no good image', async () => {
      const cgroup = lab.cgroup(hierarchy, 'late-failure');
      const dir = lab.tempDir('late-failure');
      lab.spawnIn(cgroup, workload('counter-tree.pl'), [dir, '1']);
      const pids = await lab.waitForProcesses(cgroup, 2);
      await waitForCount(join(dir, 'child-1'));
      const freezer = openFreezer(refOf(cgroup));
      try {
        // Frozen before the request: a failure before the thaw would freeze it again (its prior
        // state); after the thaw it must be left running.
        await freezer.freeze();
        const images = lab.tempDir('images-late');
        const checkpointer = checkpointerIn(lab, undefined, [images]);
        // The failure: a file planted where the manifest goes, once the flow has thawed. The
        // manifest is created with O_EXCL, so its write fails (EEXIST) as a full disk or an I/O
        // error would at that step; nothing about the kernel is faked.
        const plant = () => {
          const [partial] = partialsIn(images);
          writeFileSync(join(images, partial, 'manifest.json'), '{"planted": true}\n');
        };
        const stages: string[] = [];
        await assert.rejects(
          checkpointer.checkpoint(
            refOf(cgroup),
            { after: 'thawed', imagesDir: images },
            { onProgress: (e) => (stages.push(e.stage), e.stage === 'manifest' && plant()) },
          ),
          (err: unknown) => {
            assert.ok(isAgentError(err), String(err));
            assert.match(err.message, /EEXIST/);
            assert.doesNotMatch(err.message, /lost|killed/, 'nothing is reported lost');
            return true;
          },
        );
        assert.ok(stages.indexOf('policy') < stages.indexOf('manifest'));
        assert.equal(freezer.state(), 'THAWED', 'left running, not frozen again');
        for (const pid of pids) assert.ok(pidAlive(pid), `pid ${pid} alive`);
        await waitForCount(join(dir, 'child-1'), counterValue(join(dir, 'child-1')));
        const listed = checkpointer.list();
        assert.equal(listed.filter((c) => c.status === 'good').length, 0, 'no good image');
        assert.equal(listed.length, 1);
        assert.ok(existsSync(join(images, `${listed[0].id}.failed`)), 'kept as <id>.failed');
        assert.deepEqual(partialsIn(images), []);
      } finally {
        freezer.close();
      }
    });
  });
}
