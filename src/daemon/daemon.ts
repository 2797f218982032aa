// Starting and stopping agentd: find CRIU (through the Checkpointer, its one owner), recover what a crashed agent left, listen, tell systemd
// we are ready; on SIGTERM tell systemd we are stopping, stop accepting, cancel running checkpoints
// (each cgroup goes back to its prior state), wait for every request to end, and exit 0.

import { existsSync } from 'node:fs';
import { Archives } from '../archive/index.js';
import { Checkpointer } from '../checkpoint/index.js';
import { isAgentError } from '../errors/index.js';
import { CgroupControl } from '../lock/index.js';
import { createRequestHandler } from './api.js';
import type { Services } from './context.js';
import { HostFactsSource, type CriuFacts } from './host.js';
import { listenApi, type Listening } from './listen.js';
import { createLogger, type LogFormat, type Logger, type LogLevel } from './logging.js';
import { Metrics } from './metrics.js';
import { createNotifier, type Notifier } from './notify.js';
import { describeOperations, Operations } from './operations.js';
import { ApiServer } from './server.js';
import { createUpgradeHandler } from './attach.js';
import { TerminalSessions } from '../terminal/index.js';
import { criuScopeWrap, SYSTEMD_RUNTIME_DIR } from '../systemd/index.js';
import {
  DEFAULT_IMAGES_DIR,
  DEFAULT_MAX_IMPORT_BYTES,
  DEFAULT_RUN_DIR,
  DEFAULT_SIGNING_KEY,
  DEFAULT_SOCKET,
  DEFAULT_TRUSTED_KEYS_DIR,
  packageVersion,
} from '../defaults/index.js';

export interface DaemonOptions {
  readonly socket?: string;
  readonly runDir?: string;
  readonly imagesDir?: string;
  /** More directories a checkpoint request may name as its `imagesDir` (`--allow-images-dir`). */
  readonly allowedImagesDirs?: readonly string[];
  readonly criu?: string;
  /** The signing key of exported archives (`--key`); made when missing. */
  readonly keyFile?: string;
  /** Public keys whose archives import without --trust (`--trusted-keys`). */
  readonly trustedKeysDir?: string;
  /** The largest compressed archive an import reads (`--max-import-bytes`). */
  readonly maxImportBytes?: number;
  /**
   * Run each dump's CRIU in a transient systemd scope of its own (`--criu-scope`, which
   * agentd.service passes), out of reach of a kill of agentd's unit (src/systemd/scope.ts).
   */
  readonly criuScope?: boolean;
  /**
   * Restored processes become a transient systemd scope, agentd-restore-ID.scope unless the request
   * names one (`--restore-scope`, which agentd.service passes; src/systemd/restore-scope.ts).
   */
  readonly restoreScope?: boolean;
  /** CRIU's -v level for dumps (`--criu-log-level`; default 3, src/criu/dump.ts). */
  readonly criuLogLevel?: number;
  readonly logLevel?: LogLevel;
  readonly logFormat?: LogFormat;
  readonly logger?: Logger;
}

export interface Daemon {
  readonly listening: Listening;
  readonly logger: Logger;
  /** Stops as SIGTERM does; resolves when every request has ended. Idempotent. */
  stop(reason: string): Promise<void>;
}

/** The Checkpointer's CRIU as host facts: what `GET /v1/host` shows, and the log at start. */
async function criuFacts(checkpointer: Checkpointer): Promise<CriuFacts> {
  try {
    return { ok: true, ...(await checkpointer.findCriu()) };
  } catch (err) {
    const error = isAgentError(err) ? { code: err.code, message: err.message } : { code: 'EIO', message: String(err) };
    return { ok: false, error };
  }
}

function logCriu(criu: CriuFacts, logger: Logger): void {
  if (!criu.ok) {
    logger.warn('no usable CRIU: checkpoints will be refused', criu.error);
    return;
  }
  if (criu.check.ok) logger.info('CRIU found', { path: criu.path, version: criu.version, selfTest: criu.selfTest.status });
  else
    logger.warn('CRIU fails `criu check`: checkpoints will be refused', {
      path: criu.path,
      version: criu.version,
      output: criu.check.output,
    });
  if (criu.selfTest.status === 'failed') {
    logger.warn('CRIU failed its self-test on this kernel (npm run setup installs one that passes)', {
      path: criu.path,
      reason: criu.selfTest.record.reason,
    });
  }
}

async function recoverLeftovers(checkpointer: Checkpointer, logger: Logger): Promise<void> {
  try {
    const report = await checkpointer.recover();
    // `found` begins with what was interrupted: "an interrupted checkpoint (...)" or "... restore (...)".
    for (const c of report.cgroups)
      logger.warn(`recovered a cgroup an interrupted ${/^an interrupted (\w+)/.exec(c.found)?.[1] ?? 'operation'} left`, c);
    for (const dir of report.removedTemporaryImages)
      logger.warn('removed a temporary image directory an interrupted checkpoint left', { dir });
    for (const dir of report.finishedDeletes) logger.warn('finished removing the files of a delete cut short', { dir });
    if (report.removedLockFiles.length > 0) logger.info('removed lock files nothing held', { count: report.removedLockFiles.length });
    for (const s of report.skippedImageDirs)
      logger.warn('image directory not cleaned after a previous run: it fails its check', { dir: s.dir, reason: s.reason });
  } catch (err) {
    logger.error('recovery after a previous run failed', { error: (err as Error).message });
  }
}

export async function startDaemon(options: DaemonOptions = {}): Promise<Daemon> {
  const socket = options.socket ?? DEFAULT_SOCKET;
  const runDir = options.runDir ?? DEFAULT_RUN_DIR;
  const logger = options.logger ?? createLogger({ level: options.logLevel, format: options.logFormat });
  const startedAt = new Date();
  const version = packageVersion();
  const control = new CgroupControl({ runDir });
  const wrapDump = options.criuScope ? criuScopeWrap() : undefined;
  const restoreScopes = options.restoreScope === true && existsSync(SYSTEMD_RUNTIME_DIR);
  const checkpointer = new Checkpointer({
    control,
    imagesDir: options.imagesDir ?? DEFAULT_IMAGES_DIR,
    allowedImagesDirs: options.allowedImagesDirs,
    ...(options.criu ? { criuPath: options.criu } : {}),
    wrapDump,
    restoreScopes,
    ...(options.criuLogLevel !== undefined ? { criuLogLevel: options.criuLogLevel } : {}),
  });
  const [imagesDir, ...alsoAllowed] = checkpointer.imageRoots;
  if (options.criuScope && !wrapDump) logger.warn('--criu-scope: systemd is not PID 1 here; CRIU runs as a plain child of agentd');
  if (options.restoreScope && !restoreScopes) logger.warn('--restore-scope: systemd is not PID 1 here; restores make no scope');
  logger.info('agentd starting', {
    version,
    pid: process.pid,
    socket,
    runDir,
    imagesDir,
    criuScope: wrapDump ? true : undefined,
    restoreScope: restoreScopes || undefined,
    allowImagesDirs: alsoAllowed.length ? alsoAllowed.join(',') : undefined,
  });

  const archives = new Archives({
    checkpointer,
    keyFile: options.keyFile ?? DEFAULT_SIGNING_KEY,
    trustedKeysDir: options.trustedKeysDir ?? DEFAULT_TRUSTED_KEYS_DIR,
    maxImportBytes: options.maxImportBytes ?? DEFAULT_MAX_IMPORT_BYTES,
  });
  const key = archives.loadKey();
  if (key instanceof Error) logger.warn('no signing key: exports will be refused', { error: key.message });
  else logger.info('signing key', { file: archives.keyFile, fingerprint: key.fingerprint, trustedKeys: archives.trustedKeysDir });

  logCriu(await criuFacts(checkpointer), logger);
  await recoverLeftovers(checkpointer, logger);

  const notifier: Notifier = createNotifier(process.env, (message) => logger.warn(message));
  let ready = false;
  // STATUS= before READY=1 would show a busy agent that is not answering yet; after it, every change.
  const operations = new Operations((ops) => {
    if (ready && !stopping) notifier.send(`STATUS=${describeOperations(ops)}`);
  });
  const agent = {
    version,
    pid: process.pid,
    socket,
    runDir,
    imagesDir,
    allowedImagesDirs: [...checkpointer.imageRoots],
    startedAt: startedAt.toISOString(),
  };
  const host = new HostFactsSource(agent, () => criuFacts(checkpointer));
  host.warm();
  let stopping: Promise<void> | undefined;
  const services: Services = {
    control,
    checkpointer,
    archives,
    host,
    metrics: new Metrics(() => operations.checkpointing()),
    operations,
    logger,
    terminals: new TerminalSessions(),
    version,
    startedAt,
    shuttingDown: () => stopping !== undefined,
  };
  const api = new ApiServer(createRequestHandler(services), (message) => logger.error(message), createUpgradeHandler(services));
  const listening = await listenApi(api.server, socket);
  ready = true;
  notifier.send(`READY=1\nSTATUS=${describeOperations(operations.list())}\nMAINPID=${process.pid}`);
  notifier.startWatchdog();
  logger.info('agentd ready', {
    socket: listening.path,
    activated: listening.activated,
    group: listening.group,
    notify: notifier.socketPath,
  });

  const stop = (reason: string): Promise<void> => {
    stopping ??= (async () => {
      notifier.send(`STOPPING=1\nSTATUS=stopping: ${reason}`);
      notifier.stop();
      const running = operations.list();
      logger.info('agentd stopping', { reason, operations: running.length });
      const closed = api.stopAccepting();
      // Attached clients are told; the jobs lose their terminals when agentd exits (docs/daemon-and-cli.md).
      services.terminals.closeAll(`agentd is stopping (${reason}): the job's terminal closes with it`);
      // The orchestration answers an abort by putting the cgroup back in its prior state.
      operations.abortAll(`agentd is stopping (${reason})`);
      await api.idle();
      api.closeAllConnections();
      await closed;
      logger.info('agentd stopped', { reason });
    })();
    return stopping;
  };
  return { listening, logger, stop };
}
