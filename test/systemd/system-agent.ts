// Helpers of the tests that drive the machine's real agentd.service (npm run setup's) with systemctl:
// whether they can run here, systemctl and journalctl as data, and requests to the system agent.

import assert from 'node:assert/strict';
import { spawnSync, type SpawnSyncReturns } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { request } from 'node:http';
import { DEFAULT_SOCKET } from '../../src/defaults/index.js';
import { waitUntil } from '../helpers/lab.js';
import { runCollecting, type CliResult } from '../daemon/agent.js';

export const AGENTCTL = '/usr/local/bin/agentctl';

/** Why these tests cannot run here, or false. */
export function systemdSkip(): string | false {
  if (!existsSync('/run/systemd/system')) return 'systemd is not PID 1 here (no /run/systemd/system)';
  if (process.getuid?.() !== 0) return 'needs root (drives agentd.service with systemctl)';
  if (spawnSync('systemctl', ['cat', 'agentd.socket'], { stdio: 'ignore' }).status !== 0)
    return 'agentd.socket is not installed here (sudo npm run setup installs it)';
  return false;
}

export function run(command: string, args: string[], timeoutMs = 120_000): SpawnSyncReturns<string> {
  return spawnSync(command, args, { encoding: 'utf8', timeout: timeoutMs });
}

export function systemctl(...args: string[]): SpawnSyncReturns<string> {
  return run('systemctl', args, 300_000);
}

/** `systemctl show -p A,B UNIT` as a map. */
export function show(unit: string, ...props: string[]): Map<string, string> {
  const out = systemctl('show', `--property=${props.join(',')}`, '--', unit);
  assert.equal(out.status, 0, out.stderr);
  return new Map(
    out.stdout
      .split('\n')
      .filter((l) => l.includes('='))
      .map((l) => [l.slice(0, l.indexOf('=')), l.slice(l.indexOf('=') + 1)] as [string, string]),
  );
}

export interface Answer {
  readonly status: number;
  readonly body: Record<string, unknown>;
}

/**
 * One HTTP request to the system agent, on a connection of its own; up to 2 minutes (an agent
 * starting under emulation). Never a kept-alive one: Node 20's global agent keeps connections
 * open, and these tests stop agents with spawnSync('systemctl'), during which the event loop
 * cannot see the stopped agent close them; the next request then wrote into a dead connection and
 * failed with EPIPE (the first guest run's Type=notify failure, after systemctl start had passed).
 */
export function api(method: string, path: string, body?: unknown, requestId?: string): Promise<Answer> {
  return new Promise((resolve, reject) => {
    const data = body === undefined ? undefined : Buffer.from(JSON.stringify(body));
    const headers: Record<string, string> = {};
    if (data) Object.assign(headers, { 'content-type': 'application/json', 'content-length': String(data.length) });
    if (requestId) headers['x-request-id'] = requestId;
    const req = request({ socketPath: DEFAULT_SOCKET, method, path, headers, timeout: 120_000, agent: false }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('end', () => {
        const text = Buffer.concat(chunks).toString('utf8');
        try {
          resolve({ status: res.statusCode ?? 0, body: text ? (JSON.parse(text) as Record<string, unknown>) : {} });
        } catch {
          resolve({ status: res.statusCode ?? 0, body: { text } });
        }
      });
    });
    req.on('timeout', () => req.destroy(new Error(`${method} ${path}: no answer in 120 s`)));
    req.on('error', reject);
    req.end(data);
  });
}

/** agentctl, as the installed launcher runs it; asynchronous so that several can run at once. */
export function agentctl(args: string[], user?: string): Promise<CliResult> {
  const [command, argv] = user ? ['runuser', ['-u', user, '--', AGENTCTL, ...args]] : [AGENTCTL, args];
  return runCollecting(command, argv, { cwd: '/' });
}

export function mainPid(): number {
  return Number(show('agentd.service', 'MainPID').get('MainPID'));
}

/** The agent answering on the default socket, with its pid. */
export async function agentPid(): Promise<number> {
  const host = await api('GET', '/v1/host');
  assert.equal(host.status, 200, JSON.stringify(host.body));
  return (host.body.agent as { pid: number }).pid;
}

/** Journal records of agentd.service matching MATCHES (FIELD=value), as JSON objects. */
export function journal(matches: string[], extra: string[] = []): Record<string, string>[] {
  const out = run('journalctl', ['-u', 'agentd.service', '-o', 'json', '--no-pager', ...extra, ...matches]);
  assert.equal(out.status, 0, out.stderr);
  return out.stdout
    .split('\n')
    .filter((l) => l.trim().startsWith('{'))
    .map((l) => JSON.parse(l) as Record<string, string>);
}

/** Waits until agentd.service runs a main process other than `previous` and that agent answers; its pid. */
export async function waitForNewAgent(previous: number, timeoutMs = 180_000): Promise<number> {
  let pid = 0;
  await waitUntil(
    `agentd.service to run a new agent (the old one was ${previous})`,
    () => {
      const s = show('agentd.service', 'ActiveState', 'SubState', 'MainPID');
      pid = Number(s.get('MainPID'));
      return s.get('ActiveState') === 'active' && s.get('SubState') === 'running' && pid > 0 && pid !== previous;
    },
    timeoutMs,
  );
  assert.equal(await agentPid(), pid, 'the agent answering is the new main process');
  return pid;
}

/** The pid tracing PID (/proc/PID/status TracerPid), 0 when none. */
export function tracerOf(pid: number): number {
  try {
    return Number(/^TracerPid:\s+(\d+)/m.exec(readFileSync(`/proc/${pid}/status`, 'utf8'))?.[1] ?? 0);
  } catch {
    return 0;
  }
}

/** The cgroup lines of /proc/PID/cgroup (`0::/system.slice/x.scope`, `1:name=systemd:/...`), [] once gone. */
export function cgroupLines(pid: number): string[] {
  try {
    return readFileSync(`/proc/${pid}/cgroup`, 'utf8').trim().split('\n');
  } catch {
    return [];
  }
}

/** Live processes whose command is criu (by /proc/PID/comm). */
export function criuProcesses(): number[] {
  const found: number[] = [];
  for (const line of run('pgrep', ['-x', 'criu']).stdout.split('\n')) if (/^\d+$/.test(line.trim())) found.push(Number(line));
  return found;
}

/** What a test made under the system agent, to undo at its end: units stopped (and reset), checkpoints deleted, the lab cleaned. */
export async function undoMade(lab: { cleanup(): Promise<void> }, units: readonly string[], checkpoints: readonly string[]): Promise<void> {
  for (const unit of units) {
    spawnSync('systemctl', ['stop', unit], { stdio: 'ignore' });
    spawnSync('systemctl', ['reset-failed', unit], { stdio: 'ignore' });
  }
  for (const id of checkpoints) await api('DELETE', `/v1/checkpoints/${id}`).catch(() => undefined);
  await lab.cleanup();
}
