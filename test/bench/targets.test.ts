// The checkpoint targets of bench/targets.ts judged on made-up figures (pure logic; the real figures
// come from `npm run bench`, which test/bench/bench.test.ts runs in a tiny configuration).

import assert from 'node:assert/strict';
import { test } from 'node:test';
import type { CheckpointCase } from '../../bench/checkpoint.js';
import { summarize } from '../../bench/stats.js';
import { evaluateTargets } from '../../bench/targets.js';

function fixture(name: CheckpointCase['fixture'], agentdTotal: number, window: number, criuTotal: number): CheckpointCase {
  const s = (x: number) => summarize([x, x, x]);
  return {
    fixture: name,
    hierarchy: 'v2',
    processes: name === 'tree-20' ? 20 : 1,
    imageBytes: 1,
    agentd: { totalMs: s(agentdTotal), frozenWindowMs: s(window) },
    criu: { totalMs: s(criuTotal), frozenMs: s(criuTotal / 2), freezingMs: s(1) },
    ratio: agentdTotal / criuTotal,
    frozenExcessMs: 0,
  } as unknown as CheckpointCase;
}

const judged = (checkpoint: CheckpointCase[]) =>
  Object.fromEntries(
    evaluateTargets({ latency: [], checkpoint })
      .filter((t) => t.name.startsWith('checkpoint'))
      .map((t) => [t.name, { measured: t.measured, met: t.met }]),
  );

test('checkpoint targets: the 256 MiB window against 1.10x the bare run, the tree against +20 ms, the whole against 1.25x', () => {
  assert.deepEqual(
    judged([fixture('memory-64MiB', 400, 300, 370), fixture('memory-256MiB', 920, 800, 765), fixture('tree-20', 327, 214, 177)]),
    {
      'checkpoint-frozen-window-256mib-within-1.1x-criu-run': { measured: 1.046, met: true },
      'checkpoint-frozen-window-tree-within-criu-run-plus-20ms': { measured: 37, met: false },
      'checkpoint-within-1.25x-criu-run': { measured: 1.847, met: false },
    },
  );
  assert.deepEqual(judged([fixture('memory-256MiB', 1000, 900, 800), fixture('tree-20', 200, 190, 177)]), {
    'checkpoint-frozen-window-256mib-within-1.1x-criu-run': { measured: 1.125, met: false },
    'checkpoint-frozen-window-tree-within-criu-run-plus-20ms': { measured: 13, met: true },
    'checkpoint-within-1.25x-criu-run': { measured: 1.25, met: true },
  });
});

test('checkpoint targets without a checkpoint run: not measured, not judged', () => {
  for (const t of Object.values(judged([]))) assert.deepEqual(t, { measured: null, met: null });
});
