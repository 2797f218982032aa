// Pre-dumps (docs/criu.md, "Pre-dumps"): `checkpoint --pre-dump N` copies the memory of each
// process tree N times while the workload runs (`criu pre-dump --track-mem`; CRIU freezes the
// cgroup only while it drains the pages), then the usual dump, frozen, writes only the pages
// written since the last pre-dump (`--track-mem --prev-images-dir`). On disk, a tree's pre-dumps
// are `tree-<k>/pre-1` .. `pre-<N>`, each a CRIU images directory, and CRIU links each to the one
// before by a `parent` symlink (the final dump's `tree-<k>/parent` to `pre-<N>`).
//
// The published image holds no symlink: they are removed before the checksums, and the manifest
// records how many pre-dumps each tree has (TreeRecord.preDumps); a restore puts the links back
// before CRIU reads the images. So an image stays a set of plain files, every one in the manifest
// with its checksum, and export and import (src/archive) carry it like any other.

import { lstatSync, mkdirSync, readlinkSync, symlinkSync, unlinkSync } from 'node:fs';
import { join } from 'node:path';
import { checkDirtyTracking, runCriuPreDump, type CriuInfo } from '../criu/index.js';
import { AgentError } from '../errors/index.js';
import type { TreeRecord } from './types.js';

/** At most this many pre-dumps: each copies what changed since the one before, so more help less. */
export const MAX_PRE_DUMPS = 8;
const PARENT_LINK = 'parent';

/** The pre-dump directory `i` (from 1) of a tree, relative to the tree's directory. */
export const preDumpDir = (i: number): string => `pre-${i}`;

/**
 * Refuses a pre-dump that cannot work, before anything is frozen or written: a bad count, a cgroup
 * already frozen (its memory does not change: a plain checkpoint is as short), a kernel that does
 * not track the pages a task writes.
 */
export async function refuseImpossiblePreDump(criu: CriuInfo, count: number, name: string, prior: 'THAWED' | 'FROZEN'): Promise<void> {
  if (!Number.isSafeInteger(count) || count < 0 || count > MAX_PRE_DUMPS) {
    throw new AgentError('EINVAL', `--pre-dump takes a count from 0 to ${MAX_PRE_DUMPS}, got ${count}`);
  }
  if (count === 0) return;
  if (prior === 'FROZEN') {
    throw new AgentError(
      'EINVAL',
      `cgroup ${name} is frozen: its memory cannot change, so pre-dumps would not shorten anything; checkpoint it without --pre-dump`,
    );
  }
  const check = await checkDirtyTracking(criu.path);
  if (!check.ok) {
    const said = check.output.split('\n').find((l) => /dirty|track/i.test(l)) ?? check.output.split('\n')[0] ?? '';
    throw new AgentError(
      'ECRIU',
      `cgroup ${name}: --pre-dump needs a kernel that tracks the memory a task writes (soft-dirty bits), and this one does not ` +
        `(\`criu check --feature mem_dirty_track\`: ${said.trim() || 'failed'}); nothing was frozen; checkpoint without --pre-dump`,
    );
  }
}

export interface PreDumpRun {
  readonly criuPath: string;
  readonly partialDir: string;
  readonly freezeCgroup: string;
  readonly shellJob?: boolean;
  readonly logLevel?: number;
  readonly timeoutMs: () => number;
  readonly signal?: AbortSignal;
  readonly onStep?: (round: number, tree: number) => void;
}

/**
 * `count` rounds of pre-dumps of every tree, the workload running. Resolves with, per tree root,
 * how many pre-dumps it has (the final dump of a tree whose root changed meanwhile has none).
 */
export async function preDumpTrees(
  trees: readonly TreeRecord[],
  count: number,
  run: PreDumpRun,
): Promise<Map<number, { index: number; count: number }>> {
  for (let round = 1; round <= count; round++) {
    for (const tree of trees) {
      run.onStep?.(round, tree.index);
      const dir = join(run.partialDir, `tree-${tree.index}`, preDumpDir(round));
      mkdirSync(dir, { recursive: true, mode: 0o700 });
      await runCriuPreDump({
        criuPath: run.criuPath,
        pid: tree.root,
        imagesDir: dir,
        freezeCgroup: run.freezeCgroup,
        shellJob: run.shellJob,
        logLevel: run.logLevel,
        ...(round > 1 ? { prevImagesDir: `../${preDumpDir(round - 1)}` } : {}),
        timeoutMs: run.timeoutMs(),
        signal: run.signal,
      });
    }
  }
  return new Map(trees.map((t) => [t.root, { index: t.index, count }]));
}

/** Removes the `parent` links CRIU made in a tree's directory and its pre-dumps (the manifest says how to remake them). */
export function dropParentLinks(treeDir: string, count: number): void {
  for (const dir of [treeDir, ...Array.from({ length: count }, (_, i) => join(treeDir, preDumpDir(i + 1)))]) {
    const link = join(dir, PARENT_LINK);
    try {
      if (lstatSync(link).isSymbolicLink()) unlinkSync(link);
    } catch {
      // none: the first pre-dump has no parent
    }
  }
}

/** Puts back the `parent` links of a tree with `count` pre-dumps, for CRIU's restore to find their pages. */
export function restoreParentLinks(treeDir: string, count: number): void {
  for (let i = count; i >= 1; i--) {
    const dir = i === count ? treeDir : join(treeDir, preDumpDir(i + 1));
    const target = i === count ? preDumpDir(i) : `../${preDumpDir(i)}`;
    linkOnce(join(dir, PARENT_LINK), target);
  }
}

function linkOnce(link: string, target: string): void {
  try {
    const stat = lstatSync(link);
    if (stat.isSymbolicLink() && readlinkSync(link) === target) return;
    if (!stat.isSymbolicLink())
      throw new AgentError('EIO', `${link} is not the link CRIU needs to its pre-dump: the checkpoint is corrupt`);
    unlinkSync(link);
  } catch (err) {
    if (err instanceof AgentError) throw err;
    // missing: made below
  }
  symlinkSync(target, link);
}

// A final dump that wrote at least this share of what the tree's first pre-dump wrote: the
// pre-dumps saved little, and the operator is told why.
const LITTLE_SAVED = 0.5;

/**
 * The warning for a tree whose pre-dumps hardly shortened its stop, from the pages each dump wrote
 * (CRIU's stats): its final dump wrote at least half of what its first pre-dump did. Undefined when
 * they saved more (or the first pre-dump wrote nothing to compare with).
 */
export function littleSavedWarning(tree: number, firstPreDumpPages: number, finalPages: number): string | undefined {
  if (firstPreDumpPages <= 0 || finalPages < firstPreDumpPages * LITTLE_SAVED) return undefined;
  const mib = (pages: number) => `${((pages * 4096) / (1 << 20)).toFixed(1)} MiB`;
  return (
    `tree ${tree}: its frozen dump wrote ${mib(finalPages)}, against ${mib(firstPreDumpPages)} for its first pre-dump: the workload ` +
    `rewrote most of its memory between them, so the pre-dumps hardly shortened the stop (the kernel tracks writes per page as it ` +
    `maps it, 2 MiB for a transparent huge page: scattered writes make all of it dirty; docs/criu.md, "Pre-dumps")`
  );
}
