// Where a restore puts its processes' pids: in the host's PID namespace, each with its saved pid
// (so none may be taken: ./pid-holders.ts), or in a new namespace of their own, where they have
// their saved pids inside and others on the host (src/criu/pid-namespace.ts,
// docs/pid-namespace.md). The restore flow asks the placement to restore each tree, to undo one,
// to name the restored processes' host pids, and at the end to settle or to discard.

import { joinCgroupsOf, waitForPidsGone } from '../cgroup/index.js';
import { PidNamespace, runCriuRestore, type CriuRestoreOptions } from '../criu/index.js';
import { AgentError } from '../errors/index.js';
import type { RestoredProcess, TreeRecord } from './types.js';

// How long the processes of a tree killed after a failed restore get to be gone.
const PIDS_FREE_WAIT_MS = 10_000;

export interface PidPlacement {
  readonly mode: 'host' | 'new';
  /** With mode new: the host pid of the namespace's init. */
  readonly namespaceInit?: number;
  /** Restores one tree (criu restore -d). */
  restoreTree(opts: CriuRestoreOptions): Promise<unknown>;
  /** Kills a restored tree and resolves once its processes are gone (true) or the wait ran out (false). */
  undoTree(tree: TreeRecord): Promise<boolean>;
  /** The restored processes of the trees, in their saved order: host pid, and namespace pid when there is one. */
  processes(trees: readonly TreeRecord[]): RestoredProcess[];
  /** Everything was restored: the placement's own processes (the namespace's init) join the job. */
  settle(root: number): void;
  /** The restore failed: whatever the placement holds is ended. */
  discard(): Promise<void>;
}

function killPids(pids: readonly number[]): Promise<boolean> {
  for (const pid of pids) {
    try {
      process.kill(pid, 'SIGKILL');
    } catch {
      // not restored, or gone
    }
  }
  return waitForPidsGone(pids, Date.now() + PIDS_FREE_WAIT_MS);
}

const savedPids = (tree: TreeRecord): number[] => tree.processes.map((p) => p.pid);

/** The host's namespace: every process has its saved pid. */
export function hostPlacement(): PidPlacement {
  return {
    mode: 'host',
    restoreTree: (opts) => runCriuRestore(opts),
    undoTree: (tree) => killPids(savedPids(tree)),
    processes: (trees) => trees.flatMap(savedPids).map((pid) => ({ pid })),
    settle: () => undefined,
    discard: async () => undefined,
  };
}

/** A new PID namespace for this restore, its init started now. */
export async function newNamespacePlacement(signal?: AbortSignal): Promise<PidPlacement> {
  const ns = await PidNamespace.open({ signal });
  const hostPidsOf = (tree: TreeRecord): number[] => {
    const map = ns.hostPids();
    return savedPids(tree)
      .map((pid) => map.get(pid))
      .filter((pid): pid is number => pid !== undefined);
  };
  return {
    mode: 'new',
    namespaceInit: ns.init,
    restoreTree: (opts) => ns.restore(opts),
    undoTree: (tree) => killPids(hostPidsOf(tree)),
    processes: (trees) => {
      const map = ns.hostPids();
      return trees.flatMap(savedPids).map((nsPid) => {
        const pid = map.get(nsPid);
        if (pid === undefined) throw new AgentError('ESRCH', `restored process ${nsPid} is not in the PID namespace of ${ns.init}`);
        return { pid, nsPid };
      });
    },
    settle: (root) => {
      joinCgroupsOf(ns.init, root);
      ns.release();
    },
    discard: async () => {
      if (!(await ns.kill())) throw new AgentError('ETIMEDOUT', `the PID namespace of ${ns.init} did not end after its init was killed`);
    },
  };
}
