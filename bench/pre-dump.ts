// Pre-dumps against the frozen window: a workload of MIB MiB that rewrites PERCENT % of its pages
// per second (fixtures/workloads/dirty-writer.pl) is checkpointed with `--after thawed`, taking
// turns, without pre-dumps and with N of them; the figure is agentd's own timings.frozenWindowMs
// (freeze to thaw), its median over the runs, and the ratio of the two. Each pre-dump also stops
// the workload while CRIU drains its pages: CRIU's own frozen_time of each is shown beside it.
//
// It needs a kernel that tracks the pages a task writes (`criu check --feature mem_dirty_track`):
// this project's host has none, Debian's guest kernel has, so it runs in a test:vm guest
// (docs/bench.md, "Pre-dumps in a guest"):
//   sudo AGENTD_VAGRANT_MEMORY=7168 npm run test:vm -- --only v2 dist/bench/pre-dump.js
// (7 GiB: the workload's 1 GiB and the images' tmpfs of up to 4 GiB).
// where the test runner runs it as a file of its own; elsewhere it says why it cannot measure and
// exits 0. Options: --mib N (1024), --percent P (2), --pre-dumps N (2), --runs N (3), --order
// in-order|random|both (both: the pages rewritten in order, then the same count at random).

import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { resolveCgroup } from '../src/cgroup/index.js';
import { Checkpointer } from '../src/checkpoint/index.js';
import { checkDirtyTracking, findCriu, readDumpStats } from '../src/criu/index.js';
import { CgroupControl } from '../src/lock/index.js';
import { BenchLab, hierarchyRoot } from './lab.js';
import { REPO_ROOT } from './native.js';
import { summarize } from './stats.js';

const { values } = parseArgs({
  options: {
    mib: { type: 'string', default: '1024' },
    percent: { type: 'string', default: '2' },
    'pre-dumps': { type: 'string', default: '2' },
    runs: { type: 'string', default: '3' },
    order: { type: 'string', default: 'both' },
  },
});
const mib = Number(values.mib);
const percent = Number(values.percent);
const preDumps = Number(values['pre-dumps']);
const runs = Number(values.runs);

const say = (line: string) => process.stdout.write(`pre-dump bench: ${line}\n`);
const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

const criu = await findCriu();
const tracking = await checkDirtyTracking(criu.path);
if (!tracking.ok) {
  say(
    `not measured here: this kernel does not track the pages a task writes (criu check --feature mem_dirty_track: ${tracking.output.trim()})`,
  );
  process.exit(0);
}
const hierarchy = hierarchyRoot('v2') ? 'v2' : 'v1';
const orders =
  values.order === 'both'
    ? (['in order', 'at random'] as const)
    : values.order === 'random'
      ? (['at random'] as const)
      : (['in order'] as const);
const lab = new BenchLab();
try {
  // On a tmpfs, as the host bench's checkpoints are: the figure is CRIU's and agentd's, not the
  // guest disk's (whose 4 GB image also holds too little for the pre-dumps of 1 GiB beside a dump).
  // 4 GiB: the random writer's pre-dumps and final dump take the whole memory each.
  const images = lab.tmpfs('images', '4g');
  const checkpointer = new Checkpointer({ control: new CgroupControl({ runDir: lab.tempDir('run') }), imagesDir: images });
  for (const order of orders) await measure(order, checkpointer);
} finally {
  const left = lab.dispose();
  if (left.length > 0) say(`left behind: ${left.join(', ')}`);
}

async function measure(order: 'in order' | 'at random', checkpointer: Checkpointer): Promise<void> {
  const cgroup = lab.cgroup(hierarchy, `pre-dump-${order === 'in order' ? 'order' : 'random'}`);
  const ready = join(lab.tempDir('writer'), 'ready');
  const writer = join(REPO_ROOT, 'fixtures', 'workloads', 'dirty-writer.pl');
  const args = [
    join(cgroup.dir, 'cgroup.procs'),
    'perl',
    writer,
    String(mib),
    String(percent),
    ready,
    ...(order === 'at random' ? ['random'] : []),
  ];
  lab.spawn(join(REPO_ROOT, 'fixtures', 'bin', 'cgexec'), args, { detached: true });
  const started = Date.now();
  while (!existsSync(ready)) {
    if (Date.now() - started > 600_000) throw new Error(`the ${mib} MiB writer was not ready after 10 minutes`);
    await sleep(200);
  }
  say(
    `${readFileSync(ready, 'utf8').trim()} (pages, pages rewritten per tick of 100 ms, ${order}); CRIU ${criu.version}, cgroup ${hierarchy}`,
  );
  const ref = resolveCgroup(cgroup.path, { hierarchy });
  const windows = { without: [] as number[], with: [] as number[] };
  const preDumpStops: number[] = [];
  for (let run = 0; run < runs; run++) {
    for (const kind of run % 2 === 0 ? (['without', 'with'] as const) : (['with', 'without'] as const)) {
      await sleep(2_000); // the writer dirties pages meanwhile, as it would between checkpoints
      const summary = await checkpointer.checkpoint(ref, { after: 'thawed', ...(kind === 'with' ? { preDumps } : {}) });
      windows[kind].push(summary.timings.frozenWindowMs);
      let stops = '';
      if (kind === 'with') {
        const tree = join(summary.dir, 'tree-0');
        const times: number[] = [];
        for (const name of readdirSync(tree)
          .filter((n) => /^pre-\d+$/.test(n))
          .sort()) {
          const stats = await readDumpStats(join(tree, name)).catch(() => undefined);
          if (stats) times.push(Math.round(stats.frozenTime / 1000));
        }
        preDumpStops.push(...times);
        stops = `; the pre-dumps stopped it ${times.map((t) => `${t} ms`).join(', ')} (CRIU's frozen_time)`;
      }
      say(
        `${order}, run ${run + 1}, ${kind} pre-dumps: frozen window ${summary.timings.frozenWindowMs} ms, ${summary.bytes} image bytes${stops}`,
      );
      for (const warning of summary.warnings ?? []) say(`  warning: ${warning}`);
      await checkpointer.delete(summary.id);
    }
  }
  const without = summarize(windows.without).median;
  const withPre = summarize(windows.with).median;
  say(
    `${order}: median frozen window ${without} ms without, ${withPre} ms with ${preDumps} pre-dumps: x${(withPre / without).toFixed(3)} (target <= 0.25); longest pre-dump stop ${Math.max(...preDumpStops)} ms`,
  );
  lab.removeCgroup(cgroup);
}
