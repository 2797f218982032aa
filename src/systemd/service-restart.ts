// A checkpoint with --after killed of a service's main process: systemd starts a service with
// Restart= again when its main process dies of a signal, so the killed workload would be running
// again behind the checkpoint (and hold the pids its restore needs). Only the main process counts:
// systemd restarts on the main process's death, not on the death of others in the unit.
// docs/daemon-and-cli.md, "Checkpointing a service", has what systemd does and what to do instead.

import { existsSync, readFileSync } from 'node:fs';
import { AgentError } from '../errors/index.js';
import { parseShow, SYSTEMD_RUNTIME_DIR } from './unit.js';
import { systemdCgroupOf } from './restore-scope.js';
import { execText } from './exec.js';

/** Restart= values under which a main process killed by SIGKILL is not started again (systemd.service(5)). */
const NO_RESTART_ON_KILL = new Set(['no', 'on-success', 'on-watchdog']);

/** The service units PIDS are tracked in (the last `.service` segment of each one's systemd cgroup). */
export function servicesOf(pids: readonly number[], procCgroup: (pid: number) => string | undefined): Map<string, number[]> {
  const units = new Map<string, number[]>();
  for (const pid of pids) {
    const text = procCgroup(pid);
    const path = text === undefined ? undefined : systemdCgroupOf(text);
    const unit = path
      ?.split('/')
      .filter((s) => s.endsWith('.service'))
      .at(-1);
    if (unit) units.set(unit, [...(units.get(unit) ?? []), pid]);
  }
  return units;
}

/** Whether a service with this Restart= would be started again after its main process is SIGKILLed. */
export function restartsWhenKilled(restart: string): boolean {
  return !NO_RESTART_ON_KILL.has(restart);
}

function readCgroup(pid: number): string | undefined {
  try {
    return readFileSync(`/proc/${pid}/cgroup`, 'utf8');
  } catch {
    return undefined;
  }
}

/**
 * EBUSY, before anything changes, when killing PIDS (a checkpoint of `name` with --after killed)
 * would kill the main process of a service that systemd would then start again. Nothing to check
 * where systemd is not PID 1.
 */
export async function refuseRestartingService(pids: readonly number[], name: string, runtimeDir = SYSTEMD_RUNTIME_DIR): Promise<void> {
  if (!existsSync(runtimeDir)) return;
  const wanted = new Set(pids);
  for (const [unit] of servicesOf(pids, readCgroup)) {
    const out = await execText('systemctl', ['show', '--property=Restart,MainPID', '--', unit], 60_000).catch(() => '');
    const props = parseShow(out);
    const main = Number(props.get('MainPID') ?? 0);
    const restart = props.get('Restart') ?? 'no';
    if (main > 0 && wanted.has(main) && restartsWhenKilled(restart)) {
      throw new AgentError(
        'EBUSY',
        `checkpoint of ${name} with --after killed: process ${main} is the main process of ${unit}, which has Restart=${restart}, ` +
          `so systemd would start the service again as soon as agentd killed it. Either set Restart=no for now ` +
          `(a runtime drop-in: systemctl edit --runtime ${unit}) and checkpoint again, or checkpoint with --after thawed and then systemctl stop ${unit}`,
      );
    }
  }
}
