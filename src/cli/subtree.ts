// Human output for a cgroup's subtree (docs/nested.md): the process counts of `agentctl state` and
// the processes of a checkpoint listed by the sub-cgroup they were in, for `agentctl show`.

import type { CgroupStatus, Manifest } from '../daemon/wire.js';

/**
 * `FROZEN  4 processes in the subtree, 1 in the cgroup itself`, and for a cgroup inside one being
 * checkpointed `CHECKPOINTING  1 process in the subtree, 1 in the cgroup itself (a checkpoint of P)`.
 */
export function stateLine(status: CgroupStatus): string {
  const total = status.subtreeProcesses;
  const line = `${status.state}  ${total} ${total === 1 ? 'process' : 'processes'} in the subtree, ${status.processes} in the cgroup itself`;
  return status.checkpointingAncestor === undefined ? line : `${line} (a checkpoint of ${status.checkpointingAncestor})`;
}

/**
 * The lines of `show` listing the processes by sub-cgroup, the cgroup itself first and every
 * recorded sub-cgroup after it, parents first, empty ones too. A manifest from before subtrees has
 * only the cgroup itself.
 */
export function processesBySubCgroup(m: Manifest): string[] {
  const processes = m.trees.flatMap((t) => t.processes.map((p) => ({ ...p, tree: t.index })));
  const subs = new Set<string>(['', ...(m.subCgroups ?? []), ...processes.map((p) => p.cgroup ?? '')]);
  const order = [...subs].sort((a, b) => (a === '' ? -1 : b === '' ? 1 : a.localeCompare(b)));
  const lines = ['  by cgroup'];
  for (const sub of order) {
    const here = processes.filter((p) => (p.cgroup ?? '') === sub);
    const name = sub === '' ? `${m.cgroup} (itself)` : `${m.cgroup}/${sub}`;
    lines.push(`    ${name}: ${here.length} ${here.length === 1 ? 'process' : 'processes'}`);
    for (const p of here) lines.push(`      ${String(p.pid).padStart(7)}  tree ${p.tree}  ${p.command}`);
  }
  return lines;
}
