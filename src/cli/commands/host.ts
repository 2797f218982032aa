// agentctl host: what the agent knows of this machine, and whether it can checkpoint here.

import type { CommandModule } from 'yargs';
import { call } from '../client.js';
import { action, clientOptions, type GlobalArgs } from '../context.js';
import { bytes, print, printJson } from '../format.js';
import type { HostFacts } from '../../daemon/wire.js';

function criuLine(criu: HostFacts['criu']): string {
  if (!criu.ok) return `unusable: ${criu.error.code}: ${criu.error.message}`;
  const check = criu.check.ok ? 'criu check: Looks good' : `criu check FAILS: ${criu.check.output.split('\n')[0]}`;
  return `${criu.version} at ${criu.path} (${check})`;
}

/** The self-test's verdict on the CRIU in use (an older agent reports none). */
function selfTestLine(criu: HostFacts['criu']): string | undefined {
  if (!criu.ok) return undefined;
  const t = criu.selfTest;
  if (!t) return 'not reported by this agentd';
  const r = t.status === 'not run' ? undefined : t.record;
  switch (t.status) {
    case 'passed':
      return `passed on kernel ${r?.kernel} at ${r?.testedAt} (dump and restore, ${r?.durationMs} ms)`;
    case 'failed':
      return `FAILED on kernel ${r?.kernel} at ${r?.testedAt}: ${r?.reason}`;
    case 'stale':
      return `not run for this binary and kernel (${t.why}): run npm run setup`;
    default:
      return `not run (${t.why ?? `no ${t.recordPath}`}): run npm run setup`;
  }
}

/** The lock CRIU is given for established TCP connections (docs/criu.md); an older agent reports none. */
function networkLockLine(criu: HostFacts['criu']): string | undefined {
  if (!criu.ok || criu.networkLock === undefined) return undefined;
  if (criu.networkLock) return `${criu.networkLock} (CRIU --network-lock: how a dump locks the TCP connections it saves)`;
  return 'none usable: --tcp-established checkpoints fail (no iptables-restore here, and this CRIU lacks nftables)';
}

/** Image roots a checkpoint may name beside the agent's own (agentd --allow-images-dir); an older agent says none. */
function alsoAllowed(h: HostFacts): string[] {
  return (h.agent.allowedImagesDirs ?? []).filter((dir) => dir !== h.imagesDir.path);
}

export const hostCommand: CommandModule<GlobalArgs, GlobalArgs> = {
  command: 'host',
  describe: 'print host facts: kernel, distribution, CPU, memory, image space, cgroup mode, CRIU',
  builder: (y) => y.example('$0 host', 'a summary').example('$0 host --json', 'everything, as JSON'),
  handler: action(async (args: GlobalArgs) => {
    const h = (await call(clientOptions(args), 'GET', '/v1/host')) as HostFacts;
    if (args.json) return printJson(h);
    const mounts = [h.cgroups.v1Freezer && `v1 freezer ${h.cgroups.v1Freezer}`, h.cgroups.v2 && `v2 ${h.cgroups.v2}`]
      .filter(Boolean)
      .join(', ');
    print(
      [
        `host      ${h.hostname}: ${h.distro.name} ${h.distro.release} (${h.distro.codename}), kernel ${h.kernel}, ${h.arch}`,
        `cpu       ${h.cpu.manufacturer} ${h.cpu.brand}, ${h.cpu.cores} cores`,
        `memory    ${bytes(h.memory.availableBytes)} available of ${bytes(h.memory.totalBytes)}`,
        `images    ${h.imagesDir.path}: ${bytes(h.imagesDir.freeBytes)} free of ${bytes(h.imagesDir.sizeBytes)}` +
          (h.imagesDir.mount ? ` (${h.imagesDir.filesystem} on ${h.imagesDir.mount})` : ''),
        ...alsoAllowed(h).map((dir) => `          also allowed: ${dir}`),
        `cgroups   ${h.cgroups.mode}: ${mounts || 'no freezer hierarchy mounted'}`,
        `criu      ${criuLine(h.criu)}`,
        ...(selfTestLine(h.criu) ? [`          self-test: ${selfTestLine(h.criu)}`] : []),
        ...(networkLockLine(h.criu) ? [`          tcp lock:  ${networkLockLine(h.criu)}`] : []),
        `agentd    ${h.agent.version}, pid ${h.agent.pid}, on ${h.agent.socket} since ${h.agent.startedAt}`,
      ].join('\n'),
    );
  }),
};
