// cgroup v2 freezer: write 1/0 to cgroup.freeze; the kernel reports completion as `frozen 1`/`frozen 0`
// in cgroup.events and raises an inotify modify event each time that file changes.

import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { AgentError } from '../errors/index.js';
import { ControlFile, readControlFile, readPids } from './control-file.js';
import { assertNotOwnCgroup } from './own-cgroup.js';
import { describeCgroup } from './resolve.js';
import { V2_REREAD_MS, watchState } from './state-watch.js';
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

const FROZEN_LINE = /^frozen 1$/m;

export class V2Freezer implements Freezer {
  private readonly name: string;
  private readonly freezeFile: ControlFile;
  private readonly eventsFile: ControlFile;
  // Opened on first use: a state or status request on a frozen cgroup reads it twice (the subtree's
  // frozen check and the process counts), the checkpoint's watch every tick.
  private statFile: ControlFile | undefined;

  constructor(readonly cgroup: CgroupRef) {
    this.name = describeCgroup(cgroup);
    this.freezeFile = new ControlFile(join(cgroup.dir, 'cgroup.freeze'), this.name, true);
    this.eventsFile = new ControlFile(join(cgroup.dir, 'cgroup.events'), this.name, false);
  }

  // The cgroup's own files settle its state unless it neither is nor asks to be frozen: only then can
  // an ancestor's freeze make it FREEZING rather than THAWED, and only then is the walk over the
  // ancestors needed (the lock's watch calls this every 20 ms during a checkpoint, docs/lock.md).
  // Same answer as status().state.
  state(): FreezerState {
    if (this.subtreeFrozen()) return 'FROZEN';
    if (this.freezeFile.read().trim() === '1') return 'FREEZING';
    return this.freezingAncestor() === undefined ? 'THAWED' : 'FREEZING';
  }

  status(): FreezerStatus {
    const selfFreezing = this.freezeFile.read().trim() === '1';
    const frozen = this.subtreeFrozen();
    const frozenBy = this.freezingAncestor();
    const parentFreezing = frozenBy !== undefined;
    // Frozen by an ancestor reads cgroup.freeze 0 yet `frozen 1`: still FROZEN to anyone inside it.
    const state: FreezerState = frozen ? 'FROZEN' : selfFreezing || parentFreezing ? 'FREEZING' : 'THAWED';
    return parentFreezing ? { state, selfFreezing, parentFreezing, frozenBy } : { state, selfFreezing, parentFreezing };
  }

  async freeze(options: FreezeOptions = {}): Promise<void> {
    assertNotOwnCgroup(this.cgroup);
    const timeoutMs = options.timeoutMs ?? DEFAULT_FREEZE_TIMEOUT_MS;
    if (await this.writeAndWait('1', timeoutMs)) return;
    // Named before the thaw, which unfreezes them all again.
    const late = this.ownFrozen() ? this.unfrozenDescendants().map((dir) => `${this.name}${dir.slice(this.cgroup.dir.length)}`) : [];
    // While a descendant is not frozen the kernel clears the cgroup's own `frozen 1` only as its
    // tasks leave the freeze, after the write has returned: wait for that, unless an ancestor's
    // freeze keeps it frozen anyway.
    let thawed = true;
    if (this.freezingAncestor() === undefined) thawed = await this.writeAndWait('0', DEFAULT_FREEZE_TIMEOUT_MS);
    else this.freezeFile.write('0');
    const which = late.length === 0 ? '' : ` (its own tasks froze; not those of ${late.join(', ')})`;
    throw new AgentError(
      'ETIMEDOUT',
      `cgroup ${this.name} did not report "frozen 1" in cgroup.events within ${timeoutMs} ms${which}; ` +
        (thawed ? 'thawed it again' : 'wrote 0 to cgroup.freeze, yet it still reports "frozen 1"'),
    );
  }

  async thaw(): Promise<void> {
    const ancestor = this.freezingAncestor();
    if (ancestor !== undefined) {
      throw new AgentError('EBUSY', `cgroup ${this.name} is frozen by its parent ${ancestor}; thaw that cgroup instead`);
    }
    // A v2 thaw is normally complete when the write returns; wait for the kernel's word regardless.
    if (!(await this.writeAndWait('0', DEFAULT_FREEZE_TIMEOUT_MS))) {
      throw new AgentError('ETIMEDOUT', `cgroup ${this.name} still reports "frozen 1" after writing 0 to cgroup.freeze`);
    }
  }

  processes(): number[] {
    return readPids(join(this.cgroup.dir, 'cgroup.procs'), this.name);
  }

  subtreeProcesses(): number[] {
    return subtreePids(this.cgroup.dir, this.name);
  }

  processCounts(): { processes: number; subtreeProcesses: number } {
    const processes = this.processes().length;
    // cgroup.stat counts the live descendants: most cgroups have none, and then the walk over the
    // directory (a readdir of its ~30 interface files) is not needed.
    if (this.hasNoDescendants()) return { processes, subtreeProcesses: processes };
    return { processes, subtreeProcesses: processes + descendantPids(this.cgroup.dir, this.name).length };
  }

  async killAll(options: { timeoutMs?: number } = {}): Promise<void> {
    assertNotOwnCgroup(this.cgroup, 'killing it would kill the agent');
    const killFile = join(this.cgroup.dir, 'cgroup.kill');
    // Tasks frozen by v2 die at once on SIGKILL; cgroup.kill (Linux 5.14+) kills the whole subtree
    // and also catches tasks forked while we kill. Without it every pid of the subtree gets SIGKILL,
    // round after round until none is left.
    const killOnce = (pids: number[]) => {
      if (!existsSync(killFile)) return sigkill(pids);
      const file = new ControlFile(killFile, this.name, true);
      try {
        file.write('1');
      } finally {
        file.close();
      }
    };
    await killSubtree(this.cgroup, this.name, killOnce, options.timeoutMs);
    // Whoever made the cgroup may remove it the moment it is empty: systemd does so for a service
    // whose main process died (docs/daemon-and-cli.md, "Checkpointing a service"). Then there is
    // nothing left to thaw, and the kill is done.
    if (this.freezingAncestor() !== undefined) return;
    try {
      this.freezeFile.write('0');
    } catch (err) {
      if (existsSync(this.cgroup.dir)) throw err;
    }
  }

  watch(onChange: () => void): StateWatch {
    return watchState(onChange, V2_REREAD_MS, this.eventsFile.path);
  }

  close(): void {
    this.freezeFile.close();
    this.eventsFile.close();
    this.statFile?.close();
  }

  /** The cgroup's own word: `frozen 1` in its cgroup.events. */
  private ownFrozen(): boolean {
    return FROZEN_LINE.test(this.eventsFile.read());
  }

  private hasNoDescendants(): boolean {
    this.statFile ??= new ControlFile(join(this.cgroup.dir, 'cgroup.stat'), this.name, false);
    return /^nr_descendants 0$/m.test(this.statFile.read());
  }

  /**
   * Frozen means the whole subtree is: the kernel sets a cgroup's `frozen 1` as soon as its own
   * tasks are frozen, without waiting for its descendants' (cgroup_update_frozen), so a parent can
   * read `frozen 1` while a child's tasks still run (docs/freezer.md, "A parent reads frozen before
   * its children"). cgroup.stat spares the walk to a cgroup without descendants, and it is read only
   * once the cgroup's own file says frozen.
   */
  private subtreeFrozen(): boolean {
    return this.ownFrozen() && this.unfrozenDescendants().length === 0;
  }

  /** The live descendants (their directories) whose cgroup.events does not say `frozen 1`. */
  private unfrozenDescendants(): string[] {
    if (this.hasNoDescendants()) return [];
    return subtreeDirs(this.cgroup.dir)
      .slice(1)
      .filter((dir) => {
        try {
          return !FROZEN_LINE.test(readControlFile(join(dir, 'cgroup.events'), this.name));
        } catch {
          return existsSync(dir); // removed meanwhile: its tasks are gone, nothing left to freeze
        }
      });
  }

  /**
   * Writes cgroup.freeze and waits until cgroup.events agrees. The kernel has often finished by the
   * time the write returns (a thaw always has, a freeze of a few sleeping tasks usually has), so the
   * file is read first and a watch set up only when needed: creating and closing one costs about
   * 0.25 ms on the reference VM when the agent was idle, more than the freeze itself (docs/bench.md).
   * Nothing can be missed: the file is re-read once the watch is in place, so a change that landed
   * between the first read and the watch is seen by that read, and any later one raises an event.
   * The kernel rate-limits cgroup.events notifications (a change within ~16 ms of the previous one is
   * reported up to 16 ms late) and inotify can lag under load, so the event only wakes us early; the
   * watch's re-read every 20 ms guarantees progress without trusting it (state-watch.ts).
   */
  private async writeAndWait(value: '0' | '1', timeoutMs: number): Promise<boolean> {
    // A freeze is done when the whole subtree is frozen; a thaw when the cgroup's own flag is gone
    // (the kernel unfreezes the descendants in the same write, except those frozen on their own).
    const done = value === '1' ? () => this.subtreeFrozen() : () => !this.ownFrozen();
    const deadline = Date.now() + timeoutMs;
    this.freezeFile.write(value);
    if (done()) return true;
    let wake: (() => void) | undefined;
    // A parent already frozen raises no event when its last descendant freezes: watch theirs too.
    const late = value === '1' ? this.unfrozenDescendants().map((dir) => join(dir, 'cgroup.events')) : [];
    const watch = watchState(() => wake?.(), V2_REREAD_MS, this.eventsFile.path, ...late);
    try {
      for (;;) {
        if (done()) return true;
        const left = deadline - Date.now();
        if (left <= 0) return false;
        await new Promise<void>((resolve) => {
          const timer = setTimeout(resolve, left);
          wake = () => {
            clearTimeout(timer);
            resolve();
          };
        });
        wake = undefined;
      }
    } finally {
      watch.close();
    }
  }

  private freezingAncestor(): string | undefined {
    return nearestFreezingAncestor(this.cgroup, 'cgroup.freeze', this.name);
  }
}
