// Restoring into a new PID namespace, so that the saved pids cannot clash with the host's
// (docs/pid-namespace.md). CRIU gives every restored process its saved pid in the PID namespace
// CRIU itself runs in; it has no option to make a new one for a tree dumped from the host's. So:
//
// - `unshare --pid --fork --mount --mount-proc --propagation slave` starts our init
//   (./pidns-init.ts, a few lines of Perl) as pid 1 of a new PID namespace, in a new mount namespace that has a /proc
//   of its own (CRIU reads and writes /proc/PID/... and ns_last_pid with the pids of its own
//   namespace; the host's /proc would show it the host's). Slave propagation: mounts the host
//   makes later still appear inside, none made inside leak out (CRIU's cgroup yard among them).
// - Each tree is restored by `nsenter --target INIT --pid --mount -- criu restore -d ...`: nsenter
//   forks, so CRIU runs inside both namespaces, and gives the tree its saved pids there. CRIU
//   exits once the tree runs (-d), and the tree's root, orphaned, is given to the namespace's init.
// - The pidfile holds the root's pid in the namespace; the host pids come from NSpid in
//   /proc/PID/status of the init's descendants.
//
// Measured here (CRIU 4.2.1, kernel 6.18): a saved pid held on the host does not matter; the
// restored sleep was 3232 inside and 4494 on the host, its parent the init.

import { spawn, type ChildProcess } from 'node:child_process';
import { rm } from 'node:fs/promises';
import { AgentError } from '../errors/index.js';
import { readDescendants, readNsPids } from '../proc/index.js';
import { findInSearchPath } from './find.js';
import { INIT_PROGRAM } from './pidns-init.js';
import { readPidFile, restoreArgs, restoreFiles, type CriuRestoreOptions } from './restore.js';
import { runCriu, type CriuRunResult } from './run.js';

// The init starts in milliseconds here; far longer under software emulation or heavy load.
const INIT_START_MS = 30_000;
const DEATH_WAIT_MS = 10_000;

/** A process of the namespace: its pid on the host, and in the namespace. */
export interface NamespacedPid {
  readonly pid: number;
  readonly nsPid: number;
}

export interface NamespaceRestoreResult extends CriuRunResult {
  /** The restored tree's root, on the host and in the namespace (its saved pid). */
  readonly root: NamespacedPid;
}

function tool(name: string): string {
  const path = findInSearchPath(name);
  if (path === undefined) {
    throw new AgentError('ECRIU', `restoring into a new PID namespace needs ${name}, which is not in the search path`);
  }
  return path;
}

/** A new PID namespace (and mount namespace) held open by our init, to restore trees into. */
export class PidNamespace {
  private released = false;
  private readonly ended: Promise<void>;

  private constructor(
    private readonly child: ChildProcess,
    /** Host pid of the namespace's init (pid 1 inside). */
    readonly init: number,
  ) {
    this.ended = new Promise((resolve) => {
      if (child.exitCode !== null || child.signalCode !== null) resolve();
      else child.once('exit', () => resolve());
    });
  }

  /** Starts the init of a new namespace and resolves once it runs. */
  static async open(options: { signal?: AbortSignal } = {}): Promise<PidNamespace> {
    const unshare = tool('unshare');
    tool('nsenter');
    const args = ['--pid', '--fork', '--mount', '--mount-proc', '--propagation', 'slave', '--', tool('perl'), '-e', INIT_PROGRAM];
    // Its own process group: a signal to agentd's group (a terminal's ^C) must not reach the job.
    const child = spawn(unshare, args, { stdio: ['pipe', 'pipe', 'pipe'], detached: true });
    child.on('error', () => undefined);
    let output = '';
    child.stderr!.setEncoding('utf8').on('data', (chunk: string) => (output += chunk.slice(0, 4096)));
    const ready = await new Promise<boolean>((resolve) => {
      const timer = setTimeout(() => resolve(false), INIT_START_MS);
      const done = (ok: boolean) => {
        clearTimeout(timer);
        options.signal?.removeEventListener('abort', onAbort);
        resolve(ok);
      };
      const onAbort = () => done(false);
      options.signal?.addEventListener('abort', onAbort, { once: true });
      child.stdout!.setEncoding('utf8').on('data', (chunk: string) => {
        if (chunk.includes('ready')) done(true);
      });
      child.once('exit', () => done(false));
      child.once('error', (err) => {
        output += err.message;
        done(false);
      });
    });
    const init = child.pid === undefined ? undefined : readDescendants(child.pid)[1];
    if (!ready || init === undefined) {
      if (child.pid !== undefined) killGroup(child.pid);
      throw new AgentError(
        options.signal?.aborted ? 'EINTR' : 'ECRIU',
        `could not start the init of a new PID namespace (${unshare} ${args.slice(0, -1).join(' ')} ...): ${output.trim() || (ready ? 'it has no child' : 'it never said it was ready')}`,
      );
    }
    child.stdout!.destroy();
    child.stderr!.destroy();
    child.unref();
    return new PidNamespace(child, init);
  }

  /**
   * Restores one tree inside the namespace (criu restore -d through nsenter, via runCriu: the
   * same timeout, abort and errors). The saved pids need not be free on the host.
   */
  async restore(opts: CriuRestoreOptions): Promise<NamespaceRestoreResult> {
    const { pidFile, logPath } = restoreFiles(opts);
    const args = ['--target', String(this.init), '--pid', '--mount', '--', opts.criuPath, ...restoreArgs(opts, pidFile)];
    await rm(pidFile, { force: true }).catch(() => undefined);
    // No cgroup-yard cleanup (./restore.ts's withYardCleanup): a killed CRIU's yard is mounted in
    // the namespace's mount namespace, which goes with the namespace when a failed restore ends it.
    const result = await runCriu(`criu restore from ${opts.imagesDir} in PID namespace of ${this.init}`, args, logPath, {
      ...opts,
      criuPath: tool('nsenter'),
    });
    const nsPid = await readPidFile(pidFile);
    const pid = nsPid === undefined ? undefined : this.hostPids().get(nsPid);
    if (nsPid === undefined || pid === undefined) {
      throw new AgentError(
        'ECRIU',
        `criu restore from ${opts.imagesDir} succeeded but ${nsPid === undefined ? `wrote no pid to ${pidFile}` : `its root ${nsPid} is not in the namespace`}`,
        { details: { logPath: result.logPath, args: result.args } },
      );
    }
    return { ...result, root: { pid, nsPid } };
  }

  /** The processes of the namespace now, namespace pid to host pid (the init itself is 1). */
  hostPids(): Map<number, number> {
    const map = new Map<number, number>();
    for (const pid of readDescendants(this.init)) {
      const ns = readNsPids(pid);
      if (ns !== undefined && ns.length >= 2) map.set(ns[ns.length - 1], pid);
    }
    return map;
  }

  /**
   * The restore is over: the init now only reaps, and exits when the last process of the
   * namespace has (./pidns-init.ts). Idempotent.
   */
  release(): void {
    if (this.released) return;
    this.released = true;
    this.child.stdin?.end();
    this.child.stdin?.destroy();
  }

  /** Ends the namespace: SIGKILL to its init, which takes every process inside with it; resolves once they are gone. */
  async kill(): Promise<boolean> {
    this.release();
    try {
      process.kill(this.init, 'SIGKILL');
    } catch {
      // gone already
    }
    // Held (ref) until then: the caller waits for it, and nothing else may keep this process alive.
    this.child.ref();
    let timer: NodeJS.Timeout | undefined;
    const late = new Promise<boolean>((resolve) => (timer = setTimeout(() => resolve(false), DEATH_WAIT_MS)));
    try {
      return await Promise.race([this.ended.then(() => true), late]);
    } finally {
      clearTimeout(timer);
      this.child.unref();
    }
  }
}

function killGroup(pgid: number): void {
  try {
    process.kill(-pgid, 'SIGKILL');
  } catch {
    // gone
  }
}
