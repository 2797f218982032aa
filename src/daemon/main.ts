// bin/agentd: the agent in the foreground. Parses its options, starts, and turns SIGTERM/SIGINT into
// a clean stop that exits 0 (systemd's `systemctl stop`, or Ctrl-C in a terminal).

import { isAbsolute } from 'node:path';
import yargs from 'yargs';
import { hideBin } from 'yargs/helpers';
import { startDaemon } from './daemon.js';
import { DUMP_LOG_LEVEL } from '../criu/index.js';
import { createLogger, LOG_FORMATS, LOG_LEVELS } from './logging.js';
import {
  DEFAULT_IMAGES_DIR,
  DEFAULT_MAX_IMPORT_BYTES,
  DEFAULT_RUN_DIR,
  DEFAULT_SIGNING_KEY,
  DEFAULT_SOCKET,
  DEFAULT_TRUSTED_KEYS_DIR,
  packageVersion,
} from '../defaults/index.js';

/** `64G`, `512M`, `1048576`: a byte count with an optional binary K, M, G or T suffix. */
export function parseByteCount(text: string): number | undefined {
  const m = /^(\d+)([KMGT]?)$/i.exec(text.trim());
  if (!m) return undefined;
  const n = Number(m[1]) * 1024 ** ' KMGT'.indexOf((m[2] || ' ').toUpperCase());
  return Number.isSafeInteger(n) && n > 0 ? n : undefined;
}

export async function main(argv: string[] = hideBin(process.argv)): Promise<void> {
  const args = await yargs(argv)
    .scriptName('agentd')
    .usage(
      '$0 [options]\n\nThe agentd host agent in the foreground: cgroup freezer, CHECKPOINTING lock and CRIU checkpoints, served as HTTP/1.1 on a Unix socket. Under systemd use agentd.socket and agentd.service.',
    )
    .option('socket', { type: 'string', default: DEFAULT_SOCKET, describe: 'Unix socket to listen on (ignored under socket activation)' })
    .option('run-dir', { type: 'string', default: DEFAULT_RUN_DIR, describe: 'where the CHECKPOINTING lock files live' })
    .option('images-dir', { type: 'string', default: DEFAULT_IMAGES_DIR, describe: 'where checkpoint images are stored' })
    .option('allow-images-dir', {
      type: 'string',
      array: true,
      requiresArg: true,
      describe: 'one more directory a checkpoint request may name as its images directory (repeatable; absolute)',
    })
    .option('key', {
      type: 'string',
      default: DEFAULT_SIGNING_KEY,
      describe: 'the ed25519 key that signs exported archives (made, mode 0600, if missing)',
    })
    .option('trusted-keys', {
      type: 'string',
      default: DEFAULT_TRUSTED_KEYS_DIR,
      describe: 'directory of public keys (one PEM per file) whose archives import without --trust',
    })
    .option('max-import-bytes', {
      type: 'string',
      default: String(DEFAULT_MAX_IMPORT_BYTES / 1024 ** 3) + 'G',
      describe: 'largest compressed archive an import reads (bytes, or with K, M, G, T)',
    })
    .option('criu', { type: 'string', describe: 'the criu binary (default: found on PATH and in the sbin directories)' })
    .option('criu-scope', {
      type: 'boolean',
      default: false,
      describe:
        "run each dump's CRIU in a transient systemd scope of its own, so that a kill of agentd's unit cannot reach it (agentd.service passes it)",
    })
    .option('restore-scope', {
      type: 'boolean',
      default: false,
      describe:
        'make the processes of each restore a transient systemd scope (agentd-restore-ID.scope, or the name the restore gives), so that systemctl status and stop see them (agentd.service passes it)',
    })
    .option('criu-log-level', {
      type: 'number',
      choices: [0, 1, 2, 3, 4],
      default: DUMP_LOG_LEVEL,
      describe:
        "CRIU's -v level in each dump's dump.log: 4 adds every memory area, file and syscall (more detail for a hunt, a slower dump)",
    })
    .option('log-level', { choices: LOG_LEVELS, default: 'info' as const, describe: 'least severe level logged' })
    .option('log-format', { choices: LOG_FORMATS, default: 'text' as const, describe: 'text lines, or one JSON object per line' })
    .check((a) => {
      const relative = (a['allow-images-dir'] ?? []).filter((dir) => !isAbsolute(dir));
      if (relative.length > 0)
        throw new Error(`--allow-images-dir takes an absolute path, got ${relative.map((d) => JSON.stringify(d)).join(', ')}`);
      if (parseByteCount(a['max-import-bytes']) === undefined)
        throw new Error(`--max-import-bytes takes a byte count such as 68719476736 or 64G, got ${JSON.stringify(a['max-import-bytes'])}`);
      return true;
    })
    .example('$0', 'listen on /run/agentd/agentd.sock')
    .example('$0 --socket /tmp/a.sock --run-dir /tmp/a-run --images-dir /tmp/a-images', 'a second agent beside the first')
    .example('$0 --allow-images-dir /srv/checkpoints', 'checkpoint --images-dir /srv/checkpoints is allowed too')
    .example('$0 --log-level debug --log-format json', 'log every request as JSON')
    .version(packageVersion())
    .strict()
    .help()
    .parseAsync();

  const logger = createLogger({ level: args['log-level'], format: args['log-format'] });
  // The handlers come first: a SIGTERM while agentd starts (probing CRIU, recovering what a killed
  // agent left) would otherwise end the process at once, as Node's default does, and systemd can
  // send one the moment READY=1 has gone out. One that comes before the start is done is acted on
  // as soon as it is: recovery finishes, so every cgroup is back as it should be, then agentd stops.
  let daemon: Awaited<ReturnType<typeof startDaemon>> | undefined;
  let early: NodeJS.Signals | undefined;
  const onSignal = (signal: NodeJS.Signals) => {
    if (!daemon) {
      if (!early) logger.info(`${signal} while starting: agentd stops once it has started`);
      early ??= signal;
      return;
    }
    void daemon.stop(signal).then(
      () => setTimeout(() => process.exit(0), 20),
      (err) => {
        logger.error('agentd failed to stop cleanly', { error: (err as Error).message });
        setTimeout(() => process.exit(1), 20);
      },
    );
  };
  process.on('SIGTERM', onSignal);
  process.on('SIGINT', onSignal);
  process.on('SIGHUP', () => logger.info('SIGHUP ignored: agentd has no configuration to reload'));
  try {
    daemon = await startDaemon({
      socket: args.socket,
      runDir: args['run-dir'],
      imagesDir: args['images-dir'],
      allowedImagesDirs: args['allow-images-dir'],
      criu: args.criu,
      criuScope: args['criu-scope'],
      restoreScope: args['restore-scope'],
      criuLogLevel: args['criu-log-level'],
      keyFile: args.key,
      trustedKeysDir: args['trusted-keys'],
      maxImportBytes: parseByteCount(args['max-import-bytes']),
      logger,
    });
  } catch (err) {
    logger.error('agentd failed to start', { error: (err as Error).message });
    await new Promise((resolve) => setTimeout(resolve, 50)); // let the line reach the log
    process.exit(1);
  }
  if (early) onSignal(early);
}
