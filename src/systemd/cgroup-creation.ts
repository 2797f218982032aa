// Where agentd may make a cgroup on a host where systemd is PID 1 (docs/daemon-and-cli.md, "Where
// agentd makes cgroups"). On cgroup v2 systemd owns the cgroups of its units and slices: it creates,
// migrates and removes them as units start and stop, and a cgroup someone else made inside one races
// it (a service's cgroup is removed once its main process is gone, measured in the guests,
// docs/vm.md). Only a unit started with Delegate=yes hands its subtree to whoever runs in it. So a
// cgroup agentd makes goes either below such a unit (a restore's own scope is one), or outside every
// unit (a cgroup systemd did not make, such as a top-level one), under a name that is not a unit's.
// systemd does not manage the v1 freezer hierarchy: there nothing is refused.

import { existsSync } from 'node:fs';
import { AgentError } from '../errors/index.js';
import { execText } from './exec.js';
import { CGROUP_UNIT_TYPES, parseShow, SYSTEMD_RUNTIME_DIR, unitNamePattern } from './unit.js';

// Every unit type systemd gives a cgroup of its own: those agentctl takes as targets, and the
// socket, mount and swap units that have one while their command runs.
const UNIT_CGROUP = unitNamePattern([...CGROUP_UNIT_TYPES, 'socket', 'mount', 'swap']);

/**
 * The unit whose cgroup holds CGROUP, as its path shows it: the outermost unit on the path that is
 * not a slice (below it, a delegated unit's subtree may hold anything, even names that look like
 * units), else the innermost slice; undefined outside every unit.
 */
export function owningUnit(cgroup: string): { unit: string; cgroup: string } | undefined {
  const segments = cgroup.split('/').filter((s) => s !== '');
  let slice: { unit: string; cgroup: string } | undefined;
  for (let i = 0; i < segments.length; i++) {
    if (!UNIT_CGROUP.test(segments[i])) continue;
    const found = { unit: segments[i], cgroup: segments.slice(0, i + 1).join('/') };
    if (!found.unit.endsWith('.slice')) return found;
    slice = found;
  }
  return slice;
}

const ADVICE =
  'restore it as a scope unit of its own (leave out --no-unit and --cgroup, or give --unit NAME), into the subtree of a unit started with Delegate=yes, or into a cgroup that exists';

/**
 * Why agentd may not make DIR (relative to the v2 root, its parent existing), given what systemd says
 * of the unit whose cgroup holds it (`Delegate` and `ControlGroup`, from `systemctl show`); undefined
 * when it may.
 */
export function creationRefusal(
  dir: string,
  owner: { unit: string; cgroup: string } | undefined,
  props?: Map<string, string>,
): string | undefined {
  const name = dir.slice(dir.lastIndexOf('/') + 1);
  if (!owner) {
    // At the top, systemd makes its slices and init.scope; below a cgroup of no unit, it makes nothing.
    return !dir.includes('/') && UNIT_CGROUP.test(name)
      ? `cgroup ${dir} is named like a systemd unit at the top of the tree, where systemd makes its own: ${ADVICE}`
      : undefined;
  }
  if (owner.unit.endsWith('.slice')) {
    return `cgroup ${dir} would be made inside ${owner.unit}, whose cgroups systemd makes and removes itself: ${ADVICE}`;
  }
  const delegate = props?.get('Delegate') ?? 'unknown';
  if (delegate === 'yes' && props?.get('ControlGroup') === `/${owner.cgroup}`) return undefined;
  return `cgroup ${dir} would be made inside unit ${owner.unit} (Delegate=${delegate}), whose subtree systemd manages: ${ADVICE}`;
}

/**
 * EACCES, before anything is made, unless agentd may make each of DIRS (cgroup v2 paths relative to
 * the root, each the outermost of what a request would create). Asks systemd only on a host where it
 * is PID 1, and only about units that hold a directory to make.
 */
export async function checkMayCreate(hierarchy: 'v1' | 'v2', dirs: readonly string[], runtimeDir = SYSTEMD_RUNTIME_DIR): Promise<void> {
  if (hierarchy !== 'v2' || dirs.length === 0 || !existsSync(runtimeDir)) return;
  for (const dir of dirs) {
    const parent = dir.includes('/') ? dir.slice(0, dir.lastIndexOf('/')) : '';
    const owner = owningUnit(parent);
    let props: Map<string, string> | undefined;
    if (owner && !owner.unit.endsWith('.slice')) {
      try {
        props = parseShow(await execText('systemctl', ['show', '--property=Delegate,ControlGroup', '--', owner.unit], 60_000));
      } catch (err) {
        throw new AgentError('EIO', `systemctl show ${owner.unit} failed: ${(err as Error).message}`, { cause: err });
      }
    }
    const refusal = creationRefusal(dir, owner, props);
    if (refusal) throw new AgentError('EACCES', refusal);
  }
}
