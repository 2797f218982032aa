// agentd must never freeze the cgroup it runs in (or an ancestor of it): it would freeze itself and
// could never thaw. /proc/self/cgroup says where we are in each hierarchy; /proc/PID/cgroup says
// the same of any process (a restore names where the holder of a pid it needs lives).

import { readFileSync } from 'node:fs';
import { AgentError } from '../errors/index.js';
import type { CgroupRef, Hierarchy } from './types.js';

let ownPaths: Record<Hierarchy, string | undefined> | undefined;

function parseCgroupFile(text: string): Record<Hierarchy, string | undefined> {
  const paths: Record<Hierarchy, string | undefined> = { v1: undefined, v2: undefined };
  for (const line of text.split('\n')) {
    const [id, controllers, path] = [line.split(':')[0], line.split(':')[1], line.split(':').slice(2).join(':')];
    if (id === '0' && controllers === '') paths.v2 = path.replace(/^\/+/, '');
    else if (controllers?.split(',').includes('freezer')) paths.v1 = path.replace(/^\/+/, '');
  }
  return paths;
}

function readOwnPaths(): Record<Hierarchy, string | undefined> {
  return parseCgroupFile(readFileSync('/proc/self/cgroup', 'utf8'));
}

/**
 * The cgroup of a process in one hierarchy (the v2 one, or the v1 freezer's), relative to the
 * hierarchy's root: `jobs/x`, `''` for the root; undefined when the process is gone or is in none.
 */
export function cgroupOfProcess(pid: number, hierarchy: Hierarchy): string | undefined {
  try {
    return parseCgroupFile(readFileSync(`/proc/${pid}/cgroup`, 'utf8'))[hierarchy];
  } catch {
    return undefined;
  }
}

/** EINVAL when the cgroup is agentd's own or an ancestor of it; `consequence` says why that matters. */
export function assertNotOwnCgroup(ref: CgroupRef, consequence = 'freezing it would freeze the agent'): void {
  ownPaths ??= readOwnPaths();
  const own = ownPaths[ref.hierarchy];
  if (own === undefined) return;
  if (own === ref.path || own.startsWith(ref.path + '/')) {
    throw new AgentError(
      'EINVAL',
      `cgroup ${ref.hierarchy}:${ref.path} contains agentd itself (pid ${process.pid}, in ${own || '/'}); ${consequence}`,
    );
  }
}
