// The cgroups a restore's CRIU made, read from the restore logs in its work dir (one directory per
// tree, src/checkpoint/restore-flow.ts). A dump records cgroups that have nothing to do with the job,
// and a restore makes again those that are gone (src/cgroup/stray.ts, docs/criu.md): once the
// restore is over (or undone by recovery), the empty ones are removed.

import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { yardCgroupDirs } from '../cgroup/index.js';
import { createdCgroupDirs } from '../criu/index.js';

/** Host directories of the cgroups CRIU says it made, from every `tree-*\/restore.log` under workDir. */
export function cgroupsCriuMade(workDir: string): string[] {
  let trees: string[];
  try {
    trees = readdirSync(workDir).filter((name) => /^tree-\d+$/.test(name));
  } catch {
    return [];
  }
  const names: { yard: string; path: string }[] = [];
  for (const tree of trees) {
    try {
      names.push(...createdCgroupDirs(readFileSync(join(workDir, tree, 'restore.log'), 'utf8')));
    } catch {
      // no log (the tree was never started) or unreadable: nothing to learn from it
    }
  }
  return yardCgroupDirs(names);
}
