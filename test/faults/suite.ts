// Every fault test file leaves behind the same things when it ends, and above all when a test
// failed half-way: agentd processes, CRIU processes that run in sessions of their own (agentd's
// death does not reach them), and the lab's cgroups, which cannot be removed while any of those
// still hold them. One suite object registers that clean-up once, in the order it must run, so
// that no file can forget a step or take them in the wrong order.

import { after } from 'node:test';
import type { Hierarchy } from '../../src/cgroup/index.js';
import { HIERARCHIES, Lab, unavailable } from '../helpers/lab.js';
import { agentDirs, killAllAgents, type AgentDirs } from './agent.js';
import { Figures, killCriuUnder } from './checks.js';

type Step = () => void | Promise<void>;

/**
 * When a file's own clean-up step runs: `before-agents` while agentd still runs (to stop whatever
 * still talks to it, such as a race's gate holding requests), `after-agents` once agentd and CRIU
 * are dead and before the lab removes its cgroups and directories (unmounts, strays in cgroups).
 */
export type CleanupStage = 'before-agents' | 'after-agents';

export class FaultSuite {
  readonly lab: Lab;
  readonly figures = new Figures();
  readonly hierarchies: Hierarchy[];
  private readonly dirs: AgentDirs[] = [];
  private readonly steps: Record<CleanupStage, Step[]> = { 'before-agents': [], 'after-agents': [] };

  constructor(label: string) {
    this.lab = new Lab(label);
    after(async () => {
      for (const step of this.steps['before-agents']) await step();
      await killAllAgents();
      for (const d of this.dirs) killCriuUnder(d.imagesDir);
      for (const step of this.steps['after-agents']) await step();
      await this.lab.cleanup();
    });
    this.hierarchies = HIERARCHIES.filter((h) => !unavailable(h));
  }

  /** Fresh agentd paths, remembered so that a CRIU left running in them is killed at the end. */
  agentDirs(label: string, overrides: Partial<AgentDirs> = {}): AgentDirs {
    const dirs = { ...agentDirs(this.lab, label), ...overrides };
    this.dirs.push(dirs);
    return dirs;
  }

  /** Adds a file's own clean-up step; steps of one stage run in the order they were added. */
  onCleanup(step: Step, stage: CleanupStage = 'after-agents'): void {
    this.steps[stage].push(step);
  }
}
