// A restore that systemd tracks: the restored processes become a transient scope unit, so that
// `systemctl status NAME.scope` lists them, `systemctl stop` stops them and the unit's resource
// control applies, and no restored cgroup sits under a slice systemd knows nothing of
// (docs/daemon-and-cli.md, "Restores as systemd scopes").
//
// Two ways in, by the hierarchy the checkpoint's freezer cgroup lives in:
//
// - cgroup v2 (`target`): systemd's scope cgroup is the freezer cgroup, and a scope made from pids
//   already restored would move them all into its one cgroup, undoing the sub-cgroups the restore
//   put them in. So the scope comes first: a placeholder `sleep` is made its only process
//   (StartTransientUnit takes pids, not a cgroup), with Delegate=yes so that the cgroups agentd
//   makes inside it are agentd's to make, and the restore goes into the scope's cgroup. The
//   placeholder is killed once the restore is over.
// - cgroup v1 (`adopt`): systemd tracks processes in its own name=systemd hierarchy and never
//   touches the freezer one, so the restored pids are handed to a new scope while still stopped,
//   and their freezer cgroups stay as the restore made them.
//
// systemd is asked over D-Bus with busctl (one argument array, no shell), the same call
// `systemd-run --scope` makes for itself.

import { readFileSync } from 'node:fs';
import { cgroupOfProcess } from '../cgroup/index.js';
import { AgentError } from '../errors/index.js';
import { childProcess, execText } from './exec.js';
import { parseShow } from './unit.js';

/** Default scope name of a restore: after the checkpoint. */
export const RESTORE_SCOPE_PREFIX = 'agentd-restore-';

const SCOPE_NAME = /^[A-Za-z0-9:_.\\-]+\.scope$/;
/** systemd's limit on a unit name (UNIT_NAME_MAX). */
const UNIT_NAME_MAX = 255;

/** The scope name for a restore of checkpoint ID: the one asked for (`.scope` added if missing), or agentd-restore-ID.scope. */
export function restoreScopeName(id: string, unit?: string): string {
  const name = unit === undefined ? `${RESTORE_SCOPE_PREFIX}${id}.scope` : unit.endsWith('.scope') ? unit : `${unit}.scope`;
  if (!SCOPE_NAME.test(name) || name.length > UNIT_NAME_MAX || name.startsWith('-')) {
    throw new AgentError(
      'EINVAL',
      `"${name.slice(0, 100)}" is not a scope unit name: letters, digits and : _ . \\ - only, ending in .scope, at most ${UNIT_NAME_MAX} characters`,
    );
  }
  return name;
}

/** The argument array of busctl's StartTransientUnit call for a scope of PIDS. */
export function startScopeArgs(name: string, pids: readonly number[], description: string, delegate: boolean): string[] {
  const props: string[][] = [
    ['Description', 's', description],
    ['PIDs', 'au', String(pids.length), ...pids.map(String)],
    // Unloaded when it ends, failed or not, so that the name is free for the next restore.
    ['CollectMode', 's', 'inactive-or-failed'],
  ];
  if (delegate) props.push(['Delegate', 'b', 'true']);
  return [
    'call',
    'org.freedesktop.systemd1',
    '/org/freedesktop/systemd1',
    'org.freedesktop.systemd1.Manager',
    'StartTransientUnit',
    'ssa(sv)a(sa(sv))',
    name,
    'fail',
    String(props.length),
    ...props.flat(),
    '0',
  ];
}

/**
 * The path systemd tracks PID in (the unified line `0::/...`, or `name=systemd` on cgroup v1), from
 * /proc/PID/cgroup text; undefined when neither is there.
 */
export function systemdCgroupOf(procCgroup: string): string | undefined {
  let unified: string | undefined;
  for (const line of procCgroup.split('\n')) {
    const [, controllers, path] = /^\d+:([^:]*):(.*)$/.exec(line) ?? [];
    if (controllers === 'name=systemd') return path;
    if (controllers === '' && path !== undefined) unified = path;
  }
  return unified;
}

const SYSTEMD_TIMEOUT_MS = 60_000;

/** EBUSY unless systemd has no unit NAME loaded: checked before a restore changes anything. */
export async function checkScopeFree(name: string): Promise<void> {
  let out: string;
  try {
    out = await execText('systemctl', ['show', '--property=LoadState,ActiveState', '--', name], SYSTEMD_TIMEOUT_MS);
  } catch (err) {
    throw new AgentError('EIO', `systemctl show ${name} failed: ${(err as Error).message}`, { cause: err });
  }
  const props = parseShow(out);
  const load = props.get('LoadState') ?? '';
  if (load === 'not-found' || load === '') return;
  const active = props.get('ActiveState') ?? 'unknown';
  const hint =
    active === 'failed' ? `systemctl reset-failed ${name} frees the name` : `stop it (systemctl stop ${name}) or name another with --unit`;
  throw new AgentError('EBUSY', `systemd has a unit ${name} already (ActiveState=${active}): ${hint}`);
}

/** Waits until systemd tracks every live pid of PIDS in scope NAME; EIO naming the first that is not. */
async function waitInScope(name: string, pids: readonly number[], timeoutMs: number): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  const placeOf = (pid: number): string | null | undefined => {
    try {
      return systemdCgroupOf(readFileSync(`/proc/${pid}/cgroup`, 'utf8'));
    } catch {
      return null; // gone: nothing to wait for
    }
  };
  for (let delay = 5; ; delay = Math.min(delay * 2, 200)) {
    const astray = pids.find((pid) => {
      const place = placeOf(pid);
      return place !== null && !place?.endsWith(`/${name}`);
    });
    if (astray === undefined) return;
    if (Date.now() > deadline) {
      throw new AgentError(
        'EIO',
        `systemd did not move process ${astray} into ${name} within ${timeoutMs} ms (it is in ${placeOf(astray)})`,
      );
    }
    await new Promise((r) => setTimeout(r, delay));
  }
}

/** Asks systemd for scope NAME holding PIDS and waits until it holds them. EIO with systemd's own reason. */
export async function startScope(name: string, pids: readonly number[], description: string, delegate = false): Promise<void> {
  try {
    await execText('busctl', startScopeArgs(name, pids, description, delegate), SYSTEMD_TIMEOUT_MS);
  } catch (err) {
    throw new AgentError('EIO', `systemd did not make scope ${name}: ${(err as Error).message}`, { cause: err });
  }
  await waitInScope(name, pids, SYSTEMD_TIMEOUT_MS);
}

/** A scope made ahead of a restore, held by a placeholder process until release(). */
export interface HeldScope {
  readonly name: string;
  /** The scope's cgroup, relative to the unified hierarchy's root (`system.slice/NAME.scope`). */
  readonly cgroup: string;
  /** Kills the placeholder: the scope then lives on with what was restored into it, or ends if empty. */
  release(): void;
}

/**
 * Makes scope NAME (delegated) around a placeholder `sleep`, for a restore into its cgroup. The
 * placeholder ends by itself after `lifetimeMs` should this agent die before releasing it; its
 * pid is never one of `avoid` (the saved pids the restore needs).
 */
export async function holdScope(name: string, description: string, avoid: ReadonlySet<number>, lifetimeMs: number): Promise<HeldScope> {
  const seconds = String(Math.ceil(lifetimeMs / 1000));
  const { spawn } = childProcess();
  const start = () => spawn('sleep', [seconds], { stdio: 'ignore' }).on('error', () => undefined);
  let placeholder = start();
  // A placeholder that took a pid the restore needs is replaced (the next pid comes after it).
  for (let tries = 0; placeholder.pid !== undefined && avoid.has(placeholder.pid) && tries < 3; tries++) {
    placeholder.kill('SIGKILL');
    placeholder = start();
  }
  const pid = placeholder.pid;
  const child = placeholder;
  const kill = () => {
    if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
  };
  if (pid === undefined || avoid.has(pid)) {
    kill();
    throw new AgentError('EIO', `could not start the placeholder process of scope ${name}`);
  }
  try {
    await startScope(name, [pid], description, true);
    // The unified hierarchy's cgroup (`system.slice/NAME.scope`): the freezer cgroup of a v2 restore.
    const cgroup = cgroupOfProcess(pid, 'v2');
    if (!cgroup) throw new AgentError('EIO', `scope ${name} has no cgroup in the unified hierarchy`);
    return { name, cgroup, release: kill };
  } catch (err) {
    kill();
    throw err;
  }
}
