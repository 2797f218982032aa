// cgroup v1 freezer: freezer.state takes FROZEN or THAWED and reads THAWED, FREEZING or FROZEN.
// The kernel offers no notification for it, so a freeze is a write-and-read loop.

import { join } from 'node:path';
import { AgentError } from '../errors/index.js';
import { ControlFile, readControlFile, readPids } from './control-file.js';
import { assertNotOwnCgroup } from './own-cgroup.js';
import { describeCgroup } from './resolve.js';
import { backoff } from './timing.js';
import { V1_POLL_MS, watchState } from './state-watch.js';
import { descendantPids, nearestFreezingAncestor, subtreeDirs, subtreePids } from './ancestry.js';
import { killSubtree, sigkill } from './kill.js';
import {
  DEFAULT_FREEZE_TIMEOUT_MS,
  type CgroupRef,
  type FreezeOptions,
  type Freezer,
  type FreezerState,
  type FreezerStatus,
  type StateWatch,
} from './types.js';

// A v1 freeze can stay in FREEZING while tasks keep arriving (a fork storm) or while one task will
// not enter the refrigerator; rewriting FROZEN retries the kernel's walk over the tasks. Mature
// runtimes also thaw for a moment every few dozen tries, which lets a task stuck in a freezable
// sleep make progress and re-enter it freezable. We do the same every 50th try: with the backoff
// capped at 1 ms that is roughly every 45 ms, and the overall timeout bounds the whole loop.
const THAW_EVERY_N_TRIES = 50;

function parseState(text: string, cgroupName: string): FreezerState {
  const word = text.trim();
  if (word === 'THAWED' || word === 'FREEZING' || word === 'FROZEN') return word;
  throw new AgentError('EIO', `cgroup ${cgroupName}: unexpected freezer.state "${word}"`);
}

/** Thaws a descendant cgroup; one removed meanwhile needs nothing. */
function thawQuietly(dir: string): void {
  try {
    const file = new ControlFile(join(dir, 'freezer.state'), dir, true);
    try {
      file.write('THAWED');
    } finally {
      file.close();
    }
  } catch {
    // gone, or not a freezer cgroup
  }
}

export class V1Freezer implements Freezer {
  private readonly name: string;
  private readonly stateFile: ControlFile;

  constructor(readonly cgroup: CgroupRef) {
    this.name = describeCgroup(cgroup);
    this.stateFile = new ControlFile(join(cgroup.dir, 'freezer.state'), this.name, true);
  }

  state(): FreezerState {
    return parseState(this.stateFile.read(), this.name);
  }

  status(): FreezerStatus {
    const state = this.state();
    const selfFreezing = this.readFlag('freezer.self_freezing');
    const parentFreezing = this.readFlag('freezer.parent_freezing');
    return parentFreezing
      ? { state, selfFreezing, parentFreezing, frozenBy: this.freezingAncestor() }
      : { state, selfFreezing, parentFreezing };
  }

  async freeze(options: FreezeOptions = {}): Promise<void> {
    assertNotOwnCgroup(this.cgroup);
    const timeoutMs = options.timeoutMs ?? DEFAULT_FREEZE_TIMEOUT_MS;
    const deadline = Date.now() + timeoutMs;
    for (let attempt = 0; ; attempt++) {
      if (attempt > 0 && attempt % THAW_EVERY_N_TRIES === 0) this.stateFile.write('THAWED');
      this.stateFile.write('FROZEN');
      // Reading is what moves a v1 cgroup from FREEZING to FROZEN once every task is frozen.
      if (this.state() === 'FROZEN') return;
      if (Date.now() >= deadline) {
        this.stateFile.write('THAWED');
        throw new AgentError(
          'ETIMEDOUT',
          `cgroup ${this.name} did not freeze within ${timeoutMs} ms (stuck in FREEZING: tasks kept arriving or would not stop); thawed it again`,
        );
      }
      await backoff(attempt % THAW_EVERY_N_TRIES);
    }
  }

  async thaw(): Promise<void> {
    const status = this.status();
    if (status.parentFreezing) {
      throw new AgentError(
        'EBUSY',
        `cgroup ${this.name} is frozen by its parent ${status.frozenBy ?? '(an ancestor)'}; thaw that cgroup instead`,
      );
    }
    // A v1 thaw is complete when the write returns (docs/freezer.md).
    this.stateFile.write('THAWED');
  }

  processes(): number[] {
    return readPids(join(this.cgroup.dir, 'cgroup.procs'), this.name);
  }

  subtreeProcesses(): number[] {
    return subtreePids(this.cgroup.dir, this.name);
  }

  processCounts(): { processes: number; subtreeProcesses: number } {
    const processes = this.processes().length;
    return { processes, subtreeProcesses: processes + descendantPids(this.cgroup.dir, this.name).length };
  }

  async killAll(options: { timeoutMs?: number } = {}): Promise<void> {
    assertNotOwnCgroup(this.cgroup, 'killing it would kill the agent');
    const status = this.status();
    if (status.parentFreezing) {
      // Its tasks could only die once thawed, and this cgroup cannot be thawed on its own.
      throw new AgentError(
        'EBUSY',
        `cgroup ${this.name} is frozen by its parent ${status.frozenBy ?? '(an ancestor)'}: its processes cannot die until that cgroup is thawed`,
      );
    }
    // A task frozen by v1 sits in D state and ignores SIGKILL until thawed: kill first, so nothing
    // runs again, then thaw so the kills are delivered. v1 has no cgroup.kill, and a child cgroup
    // frozen on its own stays FROZEN when its parent thaws: the whole subtree is thawed, parents first.
    const killThenThaw = (pids: number[]) => {
      sigkill(pids);
      this.stateFile.write('THAWED');
      for (const dir of subtreeDirs(this.cgroup.dir).slice(1)) thawQuietly(dir);
    };
    await killSubtree(this.cgroup, this.name, killThenThaw, options.timeoutMs);
  }

  watch(onChange: () => void): StateWatch {
    return watchState(onChange, V1_POLL_MS);
  }

  close(): void {
    this.stateFile.close();
  }

  private readFlag(file: string): boolean {
    return readControlFile(join(this.cgroup.dir, file), this.name).trim() === '1';
  }

  private freezingAncestor(): string | undefined {
    return nearestFreezingAncestor(this.cgroup, 'freezer.self_freezing', this.name);
  }
}
