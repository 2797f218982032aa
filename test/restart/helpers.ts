// Shared by the restart tests: a private work directory, a tag that marks every process a run starts,
// and the stray-process check every test ends with.

import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ProcessTracker } from '../../fixtures/restart/process-tracker.js';
import { readEvents, type TreeEvent, type TreeManifest, type TreeNode } from '../../fixtures/restart/manifest.js';

let runs = 0;

export interface RunContext {
  workDir: string;
  tag: string;
  tracker: ProcessTracker;
  /** Asserts no process of this run is alive once the tree has had `timeoutMs` to exit. */
  assertNoStrayProcess(timeoutMs?: number): Promise<void>;
  /** Kills survivors by pid (only ours) and removes the work directory. Safe to call twice. */
  cleanUp(): void;
}

export function newRun(name: string): RunContext {
  runs += 1;
  // mkdtemp creates the directory 0700: the coordinator's socket lives in it.
  const workDir = mkdtempSync(join(tmpdir(), 'agentd-restart-test-'));
  const tag = `agentd-restart-test-${process.pid}-${runs}-${name.replace(/[^a-z0-9]+/gi, '-')}`;
  const tracker = new ProcessTracker(tag);
  tracker.addEventsFile(join(workDir, 'events.jsonl'));
  return {
    workDir,
    tag,
    tracker,
    async assertNoStrayProcess(timeoutMs = 10_000) {
      const alive = await tracker.waitUntilAllExited(timeoutMs);
      assert.deepEqual(alive, [], `processes of ${name} still alive ${timeoutMs} ms after the restart: ${alive.join(', ')}`);
    },
    cleanUp() {
      tracker.killSurvivors();
      rmSync(workDir, { recursive: true, force: true });
    },
  };
}

/** The outcome each node recorded when it was released, by id. */
export function releasedById(eventsPath: string): Map<string, Extract<TreeEvent, { event: 'released' }>> {
  const released = new Map<string, Extract<TreeEvent, { event: 'released' }>>();
  for (const event of readEvents(eventsPath)) if (event.event === 'released') released.set(event.id, event);
  return released;
}

export function startedById(eventsPath: string): Map<string, Extract<TreeEvent, { event: 'started' }>> {
  const started = new Map<string, Extract<TreeEvent, { event: 'started' }>>();
  for (const event of readEvents(eventsPath)) if (event.event === 'started') started.set(event.id, event);
  return started;
}

/**
 * A small fixed tree for the failure tests:
 *
 *   root (0)
 *   ├── a (1)
 *   │   ├── c (3)
 *   │   └── d (4)
 *   └── b (2)
 *       └── e (5)
 *
 * with the given behaviors (the rest restore normally) and small join delays in reverse saved order.
 */
export function smallTree(behaviors: Record<string, TreeNode['behavior']> = {}): TreeManifest {
  const shape: Array<[string, string | null]> = [
    ['root', null],
    ['a', 'root'],
    ['b', 'root'],
    ['c', 'a'],
    ['d', 'a'],
    ['e', 'b'],
  ];
  return {
    nodes: shape.map(([id, parent], order) => ({
      id,
      parent,
      order,
      counter: 10 * order,
      joinDelayMs: (shape.length - order) * 15,
      behavior: behaviors[id],
    })),
  };
}
