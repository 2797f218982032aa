// The cgroup a command acts on: a path as given, or, for a systemd unit name (build-42.service,
// .scope, .slice), the cgroup systemd runs that unit in (src/systemd). Asked here, by agentctl, as
// the user who runs it: the agent's API stays one of cgroup paths.

import { isUnitName, resolveUnitCgroup } from '../systemd/index.js';

/** ARG as the agent's `cgroup` field: unchanged for a path; the unit's ControlGroup, without its leading `/`, for a unit. */
export async function cgroupTarget(arg: string): Promise<string> {
  if (!isUnitName(arg)) return arg;
  const { controlGroup } = await resolveUnitCgroup(arg);
  return controlGroup.replace(/^\/+/, '') || '/';
}
