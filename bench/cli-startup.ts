// agentctl's start-up: one whole `agentctl state CGROUP` process (node's own start, loading the
// CLI, parsing, one request to the agent, the answer printed, exit) against `node -e 0` (node's
// start and exit alone), the two taking turns so that the load of the moment falls on both alike.
// What agentctl adds over node is what an operator's script pays for every command it runs.

import { spawn } from 'node:child_process';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import type { Hierarchy } from '../src/cgroup/index.js';
import type { RunningAgent } from './agent.js';
import type { BenchLab } from './lab.js';
import { REPO_ROOT, startWorkload, type NativeTools } from './native.js';
import { ratio, summarize, type Summary } from './stats.js';

export const AGENTCTL = join(REPO_ROOT, 'bin', 'agentctl');

export interface CliStartup {
  readonly runs: number;
  /** `node -e 0`, ms. */
  readonly node: Summary;
  /** `node bin/agentctl --socket S state CGROUP`, ms. */
  readonly agentctl: Summary;
  /** agentctl median / node median. */
  readonly ratio: number;
}

/** Runs the program to its exit; resolves with the wall time in ms, rejects on a non-zero exit. */
function timedRun(args: string[]): Promise<number> {
  return new Promise((resolve, reject) => {
    const started = performance.now();
    const child = spawn(process.execPath, args, { stdio: ['ignore', 'ignore', 'pipe'] });
    let stderr = '';
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    child.on('error', reject);
    child.on('exit', (code) => {
      const ms = performance.now() - started;
      if (code === 0) resolve(ms);
      else reject(new Error(`node ${args.join(' ')} exited ${code}: ${stderr}`));
    });
  });
}

export async function measureCliStartup(
  lab: BenchLab,
  tools: NativeTools,
  agent: RunningAgent,
  hierarchy: Hierarchy,
  runs: number,
): Promise<CliStartup> {
  const cgroup = lab.cgroup(hierarchy, 'cli-startup');
  try {
    await startWorkload(lab, tools, cgroup, 1, 'sleep');
    const ctl = [AGENTCTL, '--socket', agent.socket, 'state', cgroup.dir];
    const node: number[] = [];
    const agentctl: number[] = [];
    // One round of each first, unmeasured: the page cache and the agent's first request.
    await timedRun(['-e', '0']);
    await timedRun(ctl);
    for (let i = 0; i < runs; i++) {
      if (i % 2 === 0) {
        node.push(await timedRun(['-e', '0']));
        agentctl.push(await timedRun(ctl));
      } else {
        agentctl.push(await timedRun(ctl));
        node.push(await timedRun(['-e', '0']));
      }
    }
    const n = summarize(node);
    const a = summarize(agentctl);
    return { runs, node: n, agentctl: a, ratio: ratio(a.median, n.median) };
  } finally {
    lab.removeCgroup(cgroup);
  }
}
