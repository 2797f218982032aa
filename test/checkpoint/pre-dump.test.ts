// checkpoint with pre-dumps (src/checkpoint/pre-dump.ts). Where the kernel does not track the
// memory a task writes (`criu check --feature mem_dirty_track` fails, as on the reference VM), the
// request is refused before anything is frozen or written; where it does (Debian's kernel in the
// guests), two pre-dumps and the final dump make an image of plain files that restores. Refusals
// of a bad count and of a frozen cgroup hold everywhere. The parent links are pure file logic.

import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { lstatSync, mkdirSync, readdirSync, readFileSync, readlinkSync, symlinkSync } from 'node:fs';
import { join } from 'node:path';
import { checkDirtyTracking, findCriu } from '../../src/criu/index.js';
import { dropParentLinks, littleSavedWarning, restoreParentLinks } from '../../src/checkpoint/pre-dump.js';
import type { Manifest, ProgressEvent } from '../../src/checkpoint/index.js';
import { anyHierarchy, Lab } from '../helpers/lab.js';
import { counterValue, countingTree, refOf, rejectsWith, waitForCount } from './helpers.js';
import { openFreezer } from '../../src/cgroup/index.js';
import { Checkpointer } from '../../src/checkpoint/index.js';
import { CgroupControl } from '../../src/lock/index.js';

const lab = new Lab('pre-dump');
after(() => lab.cleanup());

/** A Checkpointer with its images directory, to look into. */
function checkpointerWithImages(): { checkpointer: Checkpointer; images: string } {
  const images = lab.tempDir('images');
  return { checkpointer: new Checkpointer({ control: new CgroupControl({ runDir: lab.tempDir('run') }), imagesDir: images }), images };
}

const criu = await findCriu();
const tracks = (await checkDirtyTracking(criu.path)).ok;

/** Every entry under dir, recursively, that is not a regular file or a directory. */
function oddEntries(dir: string): string[] {
  return readdirSync(dir, { withFileTypes: true, recursive: true })
    .filter((e) => !e.isFile() && !e.isDirectory())
    .map((e) => join(e.parentPath ?? (e as unknown as { path: string }).path, e.name));
}

test(
  'no dirty-memory tracking: refused with ECRIU naming the check, before any freeze; the workload never stops, no image is left',
  { skip: tracks && 'this kernel tracks dirty memory (the guests): the refusal cannot happen here' },
  async () => {
    const { cgroup, dir } = await countingTree(lab, anyHierarchy(), 'untracked');
    const { checkpointer, images } = checkpointerWithImages();
    const stages: string[] = [];
    const frozen: string[] = [];
    const freezer = openFreezer(refOf(cgroup));
    await assert.rejects(
      checkpointer.checkpoint(
        refOf(cgroup),
        { preDumps: 2 },
        { onProgress: (e: ProgressEvent) => (stages.push(e.stage), frozen.push(freezer.state())) },
      ),
      rejectsWith('ECRIU', /--pre-dump needs a kernel that tracks the memory a task writes.*mem_dirty_track.*nothing was frozen/),
    );
    assert.deepEqual(stages, ['preflight'], 'it ended before the freeze stage');
    assert.deepEqual(frozen, ['THAWED']);
    assert.equal(freezer.state(), 'THAWED');
    assert.deepEqual(readdirSync(images), [], 'no partial or failed image');
    const now = counterValue(join(dir, 'child-1'));
    await waitForCount(join(dir, 'child-1'), now);
    freezer.close?.();
  },
);

test('a count out of 0..8 and a frozen cgroup are refused before anything is written', async () => {
  const { cgroup } = await countingTree(lab, anyHierarchy(), 'refusals');
  const { checkpointer, images } = checkpointerWithImages();
  await assert.rejects(checkpointer.checkpoint(refOf(cgroup), { preDumps: 9 }), rejectsWith('EINVAL', /from 0 to 8, got 9/));
  const freezer = openFreezer(refOf(cgroup));
  await freezer.freeze();
  await assert.rejects(checkpointer.checkpoint(refOf(cgroup), { preDumps: 1 }), rejectsWith('EINVAL', /is frozen: .*without --pre-dump/));
  assert.equal(freezer.state(), 'FROZEN', 'left as it was');
  await freezer.thaw();
  assert.deepEqual(readdirSync(images), []);
  freezer.close?.();
});

test(
  'two pre-dumps, then the dump of what changed: plain files only, each tree records its pre-dumps, and it restores',
  { skip: !tracks && 'this kernel does not track dirty memory (criu check --feature mem_dirty_track fails)' },
  async () => {
    const { cgroup, dir, pids } = await countingTree(lab, anyHierarchy(), 'tracked');
    const { checkpointer } = checkpointerWithImages();
    const stages: string[] = [];
    const summary = await checkpointer.checkpoint(
      refOf(cgroup),
      { preDumps: 2, after: 'killed' },
      { onProgress: (e) => stages.push(e.stage) },
    );
    assert.deepEqual(stages.filter((s) => s === 'pre-dump').length, 2, 'two rounds of one tree');
    assert.ok(stages.indexOf('pre-dump') < stages.indexOf('freeze'), 'the pre-dumps come before the freeze');
    const manifest = JSON.parse(readFileSync(join(summary.dir, 'manifest.json'), 'utf8')) as Manifest;
    assert.equal(manifest.options.preDumps, 2);
    assert.equal(manifest.trees[0].preDumps, 2);
    assert.ok(manifest.files.some((f) => f.path.startsWith('tree-0/pre-1/pages-')));
    assert.ok(manifest.files.some((f) => f.path.startsWith('tree-0/pre-2/pages-')));
    assert.deepEqual(oddEntries(summary.dir), [], 'no symlink in the published image');
    const restored = await checkpointer.restore(summary.id);
    assert.deepEqual(
      [...restored.pids].sort((a, b) => a - b),
      pids,
    );
    await waitForCount(join(dir, 'child-1'), counterValue(join(dir, 'child-1')));
  },
);

test('parent links: dropped from a tree and its pre-dumps, put back pointing the way CRIU made them', () => {
  const tree = lab.tempDir('links');
  for (const d of ['pre-1', 'pre-2', 'pre-3']) mkdirSync(join(tree, d));
  symlinkSync('pre-3', join(tree, 'parent'));
  symlinkSync('../pre-2', join(tree, 'pre-3', 'parent'));
  symlinkSync('../pre-1', join(tree, 'pre-2', 'parent'));
  dropParentLinks(tree, 3);
  assert.deepEqual(oddEntries(tree), []);
  restoreParentLinks(tree, 3);
  restoreParentLinks(tree, 3); // twice: a second restore of the same image
  assert.equal(readlinkSync(join(tree, 'parent')), 'pre-3');
  assert.equal(readlinkSync(join(tree, 'pre-3', 'parent')), '../pre-2');
  assert.equal(readlinkSync(join(tree, 'pre-2', 'parent')), '../pre-1');
  assert.throws(() => lstatSync(join(tree, 'pre-1', 'parent')), /ENOENT/, 'the first pre-dump has no parent');
});

test('pre-dumps that saved little are said: a final dump writing half or more of what the first pre-dump wrote', () => {
  // 1 GiB of 4 KiB pages, as in the guest bench (docs/bench.md, "Pre-dumps in a guest").
  const all = 262_144;
  assert.equal(littleSavedWarning(0, all, Math.floor(all / 10)), undefined, 'a tenth: they saved most of the stop');
  assert.equal(littleSavedWarning(0, all, all / 2 - 1), undefined);
  assert.equal(littleSavedWarning(0, 0, 10), undefined, 'nothing to compare with');
  const warning = littleSavedWarning(2, all, all);
  assert.match(warning ?? '', /^tree 2: its frozen dump wrote 1024\.0 MiB, against 1024\.0 MiB for its first pre-dump: /);
  assert.match(warning ?? '', /transparent huge page/);
  assert.ok(littleSavedWarning(0, all, all / 2), 'exactly half');
});
