// Finding the criu binary and asking it whether it works on this kernel.

import { execFile } from 'node:child_process';
import { accessSync, constants, statSync } from 'node:fs';
import { delimiter, isAbsolute, join } from 'node:path';
import { AgentError } from '../errors/index.js';
import { readSelfTest, type CriuSelfTest } from './self-test.js';

export interface CriuCheck {
  /** `criu check` exited 0 (it prints "Looks good."). */
  readonly ok: boolean;
  /** What `criu check` printed, stdout and stderr together, trimmed. */
  readonly output: string;
}

export interface CriuInfo {
  readonly path: string;
  /** As `criu --version` prints it, e.g. "4.1.1". */
  readonly version: string;
  readonly check: CriuCheck;
  /** What scripts/install-criu.sh's functional self-test found for this binary on this kernel. */
  readonly selfTest: CriuSelfTest;
  /**
   * How CRIU locks the network around established TCP connections (--network-lock), chosen once
   * here from what the host has (chooseNetworkLock); null when neither lock can work.
   */
  readonly networkLock: NetworkLock | null;
}

/** CRIU's two ways of locking established connections while it dumps and restores them. */
export type NetworkLock = 'nftables' | 'iptables';

export interface FindCriuOptions {
  /** The self-test record to read; default SELF_TEST_RECORD (/var/lib/agentd/criu-selftest.json). */
  readonly selfTestRecord?: string;
}

const INSTALL_HINT = 'run `npm run setup` (installs a CRIU that passes its self-test, docs/criu-selection.md) or apt-get install criu';

// root's PATH may lack the sbin directories (a service started with a minimal environment), and
// scripts/install-criu.sh puts our build in /usr/local/sbin: always look there too.
const SBIN_DIRS = ['/usr/local/sbin', '/usr/sbin', '/sbin'];

// `criu check` probes kernel features; 0.05 s here. Generous, because a wedged kernel must not wedge us.
const PROBE_TIMEOUT_MS = 30_000;

function isExecutableFile(path: string): boolean {
  try {
    accessSync(path, constants.X_OK);
    return statSync(path).isFile();
  } catch {
    return false;
  }
}

/** Where `criu` would be found: PATH first, then the sbin directories. */
export function criuSearchPath(envPath: string | undefined = process.env.PATH): string[] {
  const dirs = (envPath ?? '').split(delimiter).filter((d) => d !== '' && isAbsolute(d));
  return [...new Set([...dirs, ...SBIN_DIRS])];
}

function locate(configuredPath?: string): string {
  if (configuredPath !== undefined) {
    if (!isAbsolute(configuredPath)) {
      throw new AgentError('EINVAL', `the configured CRIU path must be absolute, got "${configuredPath}"`);
    }
    if (!isExecutableFile(configuredPath)) {
      throw new AgentError('ECRIU', `CRIU not found at ${configuredPath}: ${INSTALL_HINT}`, {
        details: { path: configuredPath },
      });
    }
    return configuredPath;
  }
  const searched = criuSearchPath();
  for (const dir of searched) {
    const candidate = join(dir, 'criu');
    if (isExecutableFile(candidate)) return candidate;
  }
  throw new AgentError('ECRIU', `CRIU not found in ${searched.join(':')}: ${INSTALL_HINT}`, {
    details: { searched },
  });
}

interface BriefRun {
  readonly code: number | null;
  readonly output: string;
  readonly error?: NodeJS.ErrnoException;
}

/** Runs criu with args to its end (bounded by PROBE_TIMEOUT_MS): exit code and output, never a rejection. */
function runBriefly(path: string, args: string[]): Promise<BriefRun> {
  return new Promise((resolve) => {
    execFile(path, args, { timeout: PROBE_TIMEOUT_MS, killSignal: 'SIGKILL', maxBuffer: 1 << 20 }, (err, stdout, stderr) => {
      const output = `${stdout}${stderr}`.trim();
      if (!err) return resolve({ code: 0, output });
      const e = err as NodeJS.ErrnoException & { code?: number | string };
      // execFile reports a non-zero exit as an error whose `code` is the exit status.
      resolve({ code: typeof e.code === 'number' ? e.code : null, output, error: e });
    });
  });
}

/**
 * Resolves the criu binary (the configured path, else PATH and the sbin directories), reads its
 * version, runs `criu check` and reads the self-test's record. A failing check is reported in
 * `check`, not thrown: the caller decides (see requireWorkingCriu). Throws ECRIU when there is no
 * runnable criu.
 */
export async function findCriu(configuredPath?: string, options: FindCriuOptions = {}): Promise<CriuInfo> {
  const path = locate(configuredPath);

  const v = await runBriefly(path, ['--version']);
  const version = /^Version:\s*(\S+)/m.exec(v.output)?.[1];
  if (v.code !== 0 || version === undefined) {
    const why = v.error && v.code === null ? (v.error.code ?? v.error.message) : `exit ${v.code}`;
    throw new AgentError('ECRIU', `${path} --version failed (${why}): ${v.output || 'no output'}; ${INSTALL_HINT}`, {
      details: { path, output: v.output },
    });
  }

  const c = await runBriefly(path, ['check']);
  const nft = await runBriefly(path, ['check', '--feature', 'network_lock_nftables']);
  const networkLock = chooseNetworkLock({ nftables: nft.code === 0, iptablesRestore: findInSearchPath('iptables-restore') !== undefined });
  return {
    path,
    version,
    check: { ok: c.code === 0, output: c.output },
    selfTest: readSelfTest(path, options.selfTestRecord),
    networkLock: networkLock ?? null,
  };
}

/**
 * The network lock to pass to every dump and restore (./dump.ts says why not only with
 * --tcp-established). CRIU's default, iptables, runs the `iptables-restore` command, which a fresh
 * Debian machine does not have (setup installs it): every dump that locks a connection then fails
 * with "Iptables configuration failed" (docs/criu.md, "Established TCP connections"). A CRIU built
 * with libnftables (`criu check --feature network_lock_nftables`) locks through the library and
 * needs no command, so it comes first; iptables only where the command exists; neither otherwise.
 */
export function chooseNetworkLock(host: { nftables: boolean; iptablesRestore: boolean }): NetworkLock | undefined {
  if (host.nftables) return 'nftables';
  if (host.iptablesRestore) return 'iptables';
  return undefined;
}

/** An executable called name in the search path (criuSearchPath), or undefined. */
export function findInSearchPath(name: string): string | undefined {
  return criuSearchPath()
    .map((dir) => join(dir, name))
    .find(isExecutableFile);
}

const dirtyTracking = new Map<string, Promise<CriuCheck>>();

/**
 * `criu check --feature mem_dirty_track`: whether this kernel tracks the pages a task writes (the
 * soft-dirty bits CRIU's --track-mem needs for a pre-dump). Asked once per CRIU binary: the kernel
 * does not change under a running agent.
 */
export function checkDirtyTracking(criuPath: string): Promise<CriuCheck> {
  let check = dirtyTracking.get(criuPath);
  if (!check) {
    check = runBriefly(criuPath, ['check', '--feature', 'mem_dirty_track']).then((r) => ({ ok: r.code === 0, output: r.output }));
    dirtyTracking.set(criuPath, check);
  }
  return check;
}

/** findCriu, and ECRIU if `criu check` fails (quoting its errors), e.g. for the daemon's start. */
export async function requireWorkingCriu(configuredPath?: string): Promise<CriuInfo> {
  return assertCriuWorks(await findCriu(configuredPath));
}

/** The CRIU findCriu found, or ECRIU quoting `criu check`'s errors when that check failed. */
export function assertCriuWorks(info: CriuInfo): CriuInfo {
  if (!info.check.ok) {
    const errors = info.check.output
      .split('\n')
      .filter((l) => /Error/.test(l) && !/exited, status=/.test(l))
      .slice(0, 3)
      .join('; ');
    throw new AgentError(
      'ECRIU',
      `CRIU ${info.version} at ${info.path} fails \`criu check\` on this kernel (${errors || info.check.output}): ` +
        'run `npm run setup`, which installs a CRIU that passes its self-test in /usr/local/sbin',
      { details: { ...info } },
    );
  }
  return info;
}
