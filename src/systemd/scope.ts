// A dump's CRIU in a transient systemd scope of its own, not in agentd.service's cgroup.
//
// Why: systemd kills a service's cgroup whole. `systemctl kill agentd` signals every process in it
// (its default is --kill-whom=all); a stop, a failed start and a watchdog timeout end with SIGKILL to
// whatever is left there once the main process is gone (KillMode=mixed). A CRIU killed while it
// holds the tasks it dumps can kill them (docs/criu-faults.md), so a CRIU that is a plain child of
// agentd would be killed at the one moment it must not be. In a scope, systemd leaves it alone
// when it kills agentd.service: the dump ends by itself, CRIU puts the freezer back, and the next
// agent's recovery finds it (src/checkpoint/orphans.ts) and returns the cgroup to its prior state.
//
// `systemd-run --scope` asks systemd for the scope, moves itself into it and then execs CRIU, so
// CRIU keeps the pid and the process group runCriu gave it, and its environment (CRIU_FAULT).

import { randomBytes } from 'node:crypto';
import { existsSync } from 'node:fs';
import { SYSTEMD_RUNTIME_DIR } from './unit.js';

/** The prefix of every scope agentd makes for CRIU (`agentd-criu-1a2b3c4d.scope`). */
export const CRIU_SCOPE_PREFIX = 'agentd-criu-';

/** `systemd-run --scope ... -- ARGV`: ARGV run in a new transient scope named agentd-criu-<random>.scope. */
export function inTransientScope(argv: readonly string[], description: string): string[] {
  const unit = `${CRIU_SCOPE_PREFIX}${randomBytes(4).toString('hex')}.scope`;
  // --collect: the scope is unloaded when it ends, also when CRIU failed, so none pile up.
  return ['systemd-run', '--scope', '--quiet', '--collect', `--unit=${unit}`, `--description=${description}`, '--', ...argv];
}

/**
 * The wrap for a dump's CRIU (CriuRunOptions.wrap) when systemd is PID 1, or undefined when it is
 * not (then there is no scope to ask for, and no unit whose kill could reach CRIU).
 */
export function criuScopeWrap(runtimeDir: string = SYSTEMD_RUNTIME_DIR): ((argv: readonly string[]) => string[]) | undefined {
  if (!existsSync(runtimeDir)) return undefined;
  return (argv) => inTransientScope(argv, `agentd: ${argv.slice(0, 4).join(' ')}`);
}
