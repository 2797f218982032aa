// What agentd and agentctl know of systemd beyond the daemon's own protocols (socket activation,
// sd_notify and the journal live in src/daemon): systemd unit names as targets, and the transient
// scope a dump's CRIU runs in under agentd.service.

export {
  /** Whether a target argument is a unit name (`build-42.service`, `.scope`, `.slice`), not a path. */
  isUnitName,
  /** Asks systemd for a unit's cgroup (`systemctl show`); clear errors for no unit, no cgroup, no systemd. */
  resolveUnitCgroup,
  /** Unit names for shell completion (`systemctl list-units`); empty without systemd. */
  unitNames,
  parseUnitList,
  /** The unit types that own a cgroup: service, scope, slice. */
  CGROUP_UNIT_TYPES,
  type UnitCgroup,
  type ResolveOptions,
} from './unit.js';

export {
  /** The wrap that runs a dump's CRIU in a transient scope of its own; undefined when systemd is not PID 1. */
  criuScopeWrap,
  inTransientScope,
  CRIU_SCOPE_PREFIX,
} from './scope.js';

export {
  /** The scope a restore's processes become (docs/daemon-and-cli.md): its name, and the two ways in. */
  restoreScopeName,
  checkScopeFree,
  startScope,
  holdScope,
  startScopeArgs,
  systemdCgroupOf,
  RESTORE_SCOPE_PREFIX,
  type HeldScope,
} from './restore-scope.js';

export { SYSTEMD_RUNTIME_DIR } from './unit.js';

export {
  /** EACCES for a cgroup agentd would make inside a subtree systemd manages (cgroup v2, systemd as PID 1). */
  checkMayCreate,
  creationRefusal,
  owningUnit,
} from './cgroup-creation.js';

export {
  /** EBUSY for --after killed of a service's main process that systemd would restart. */
  refuseRestartingService,
  restartsWhenKilled,
  servicesOf,
} from './service-restart.js';
