// Moving a process into the cgroups another process is in, in every hierarchy mounted here. A
// restore into a new PID namespace uses it for the namespace's init (src/criu/pid-namespace.ts):
// started by agentd, it would otherwise stay in agentd's cgroups, and a service manager stopping
// agentd kills what is left in agentd's cgroup; the init's death ends every process of its
// namespace. In the job's cgroups it lives and dies with the job.

import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { fromSystemError } from '../errors/index.js';
import { readMountinfo } from '../proc/index.js';

/** The mount point of the hierarchy a /proc/PID/cgroup line names, or undefined when it is not mounted (at its root) here. */
export function mountOf(controllers: string, mounts: ReturnType<typeof readMountinfo>): string | undefined {
  const wanted = controllers.split(',').filter(Boolean);
  for (const m of mounts) {
    if (m.root !== '/') continue;
    if (wanted.length === 0 && m.fsType === 'cgroup2') return m.mountPoint;
    if (wanted.length > 0 && m.fsType === 'cgroup' && wanted.every((c) => m.superOptions.includes(c))) return m.mountPoint;
  }
  return undefined;
}

/**
 * Moves `pid` into the cgroup `like` is in, in each hierarchy that is mounted here; returns the
 * cgroup directories it joined. Throws (EIO, ENOENT...) naming the cgroup a move failed for.
 */
export function joinCgroupsOf(pid: number, like: number): string[] {
  let text: string;
  try {
    text = readFileSync(`/proc/${like}/cgroup`, 'utf8');
  } catch (err) {
    throw fromSystemError(err, `cannot read the cgroups of pid ${like}`);
  }
  const mounts = readMountinfo();
  const joined: string[] = [];
  for (const line of text.split('\n').filter(Boolean)) {
    const [, controllers = '', ...rest] = line.split(':');
    const mount = mountOf(controllers, mounts);
    if (mount === undefined) continue;
    const dir = join(mount, rest.join(':'));
    try {
      writeFileSync(join(dir, 'cgroup.procs'), String(pid));
    } catch (err) {
      throw fromSystemError(err, `cannot move pid ${pid} into cgroup ${dir}`);
    }
    joined.push(dir);
  }
  return joined;
}
