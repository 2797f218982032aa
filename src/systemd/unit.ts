// systemd unit names as agentctl targets: `agentctl freeze build-42.service` acts on the cgroup
// systemd runs that unit in. The cgroup comes from systemd itself (`systemctl show`, one argument
// array, no shell), never from a guess such as system.slice/NAME: a unit may sit in any slice, and a
// transient scope's path is only known to systemd.

import { existsSync } from 'node:fs';
import { AgentError } from '../errors/index.js';
import { execText } from './exec.js';

/** The unit types that own a cgroup of their own. */
export const CGROUP_UNIT_TYPES = ['service', 'scope', 'slice'] as const;

/** A whole unit name of one of TYPES (systemd.unit(5)'s characters, then `.TYPE`). */
export function unitNamePattern(types: readonly string[]): RegExp {
  return new RegExp(`^[A-Za-z0-9:_.\\\\@-]+\\.(${types.join('|')})$`);
}

const UNIT_NAME = unitNamePattern(CGROUP_UNIT_TYPES);

/** systemd(1)'s own test for "systemd is PID 1 here", as sd_booted(3) makes it. */
export const SYSTEMD_RUNTIME_DIR = '/run/systemd/system';

/**
 * Whether a target argument names a unit rather than a cgroup path: one path segment (no `/`) ending
 * in .service, .scope or .slice. `system.slice/build-42.service` stays a path, as before.
 */
export function isUnitName(target: string): boolean {
  return !target.includes('/') && UNIT_NAME.test(target);
}

/** The properties of a unit that say whether it has a cgroup, as `systemctl show` prints them. */
export interface UnitCgroup {
  readonly unit: string;
  /** ControlGroup=, e.g. `/system.slice/build-42.service` (relative to the hierarchy's root). */
  readonly controlGroup: string;
  readonly activeState: string;
}

/** Parses `systemctl show -p A -p B` output (`Key=value` lines) into a map. */
export function parseShow(text: string): Map<string, string> {
  const out = new Map<string, string>();
  for (const line of text.split('\n')) {
    const eq = line.indexOf('=');
    if (eq > 0) out.set(line.slice(0, eq), line.slice(eq + 1));
  }
  return out;
}

/** What a `systemctl show` answer means for a target: its cgroup, or the error to show. */
export function unitCgroupFrom(unit: string, props: Map<string, string>): UnitCgroup {
  const load = props.get('LoadState') ?? '';
  const active = props.get('ActiveState') ?? '';
  const cgroup = props.get('ControlGroup') ?? '';
  if (load === 'not-found' || load === '') {
    throw new AgentError('ENOENT', `systemd has no unit ${unit} (LoadState=${load || 'unknown'}): see systemctl list-units`);
  }
  if (cgroup === '') {
    throw new AgentError('ENOENT', `unit ${unit} has no cgroup (ActiveState=${active}): systemd gives a unit one only while it runs`);
  }
  return { unit, controlGroup: cgroup, activeState: active };
}

export interface ResolveOptions {
  /** Defaults to SYSTEMD_RUNTIME_DIR; a test points it elsewhere to play a host without systemd. */
  readonly runtimeDir?: string;
  readonly systemctl?: string;
}

/** Asks systemd for UNIT's cgroup. ENOENT when it has none; EINVAL on a host where systemd is not PID 1. */
export async function resolveUnitCgroup(unit: string, options: ResolveOptions = {}): Promise<UnitCgroup> {
  const runtimeDir = options.runtimeDir ?? SYSTEMD_RUNTIME_DIR;
  if (!existsSync(runtimeDir)) {
    throw new AgentError(
      'EINVAL',
      `${unit} names a systemd unit, but systemd is not the init system here (no ${runtimeDir}): name the cgroup by its path instead`,
    );
  }
  const args = ['show', '--property=LoadState,ActiveState,ControlGroup', '--', unit];
  let stdout: string;
  try {
    stdout = await execText(options.systemctl ?? 'systemctl', args, 30_000);
  } catch (err) {
    throw new AgentError('EIO', `systemctl ${args.join(' ')} failed: ${(err as Error).message}`, { cause: (err as Error).cause });
  }
  return unitCgroupFrom(unit, parseShow(stdout));
}

/** The unit names in `systemctl list-units --plain --no-legend` output (its first column), loaded or not. */
export function parseUnitList(text: string): string[] {
  const names: string[] = [];
  for (const line of text.split('\n')) {
    // A unit that failed to load is marked with a leading `●` even with --plain.
    const name = line
      .replace(/^[●*]\s*/, '')
      .trim()
      .split(/\s+/)[0];
    if (name && isUnitName(name)) names.push(name);
  }
  return names;
}

/**
 * The services, scopes and slices systemd knows whose names begin with `prefix`, for shell
 * completion: empty, never an error, where systemd is not PID 1 or does not answer within `timeoutMs`.
 */
export async function unitNames(prefix: string, options: ResolveOptions & { timeoutMs?: number } = {}): Promise<string[]> {
  if (prefix.includes('/') || !existsSync(options.runtimeDir ?? SYSTEMD_RUNTIME_DIR)) return [];
  const args = ['list-units', `--type=${CGROUP_UNIT_TYPES.join(',')}`, '--all', '--plain', '--no-legend', '--no-pager'];
  const stdout = await execText(options.systemctl ?? 'systemctl', args, options.timeoutMs ?? 1500).catch(() => '');
  return parseUnitList(stdout).filter((name) => name.startsWith(prefix));
}
