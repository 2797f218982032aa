// agentctl key | export <id> [-o FILE] | import FILE: moving a checkpoint to another agent as a
// signed archive (docs/archive.md). An export goes to a file (written beside it under a temporary
// name and renamed when complete, so a cut-off export never looks whole) or to stdout when that is
// not a terminal; an import reads a file or stdin.

import { createReadStream, renameSync, rmSync, statSync, createWriteStream } from 'node:fs';
import type { IncomingMessage } from 'node:http';
import { createRequire } from 'node:module';
import { basename, dirname, join } from 'node:path';
import { Writable } from 'node:stream';
import type { CommandModule } from 'yargs';
import { AgentError } from '../../errors/index.js';
import { call } from '../client.js';
import { action, clientOptions, type GlobalArgs } from '../context.js';
import { bytes, print, printJson } from '../format.js';
import { progressFor, type Progress } from '../progress.js';
import { download, upload } from '../transfer.js';

const ARCHIVE_TYPE = 'application/x-agentd-archive';

export const keyCommand: CommandModule<GlobalArgs, GlobalArgs> = {
  command: 'key',
  describe: "print the agent's public signing key (PEM): put it in another agent's trusted-keys directory",
  builder: (y) =>
    y
      .example('$0 key > /etc/agentd/trusted-keys/host-a.pem', "on host B, after copying: trust host A's archives")
      .example('$0 key --json', '{"algorithm":"ed25519","pem":…,"raw":…,"fingerprint":"sha256:…",…}'),
  handler: action(async (args: GlobalArgs) => {
    const reply = (await call(clientOptions(args), 'GET', '/v1/key')) as { pem: string };
    if (args.json) return printJson(reply);
    process.stdout.write(reply.pem);
  }),
};

interface ExportArgs extends GlobalArgs {
  readonly id: string;
  readonly output?: string;
}

/**
 * Progress of an export: the archive's uncompressed bytes (the agent says how many in
 * X-Archive-Bytes), counted by inflating a copy of the stream, on a terminal only.
 */
function exportProgress(res: IncomingMessage, progress: Progress, zlib: typeof import('node:zlib')): void {
  const total = Number(res.headers['x-archive-bytes']);
  let inflated = 0;
  let sent = 0;
  const counter = zlib.createBrotliDecompress();
  counter.on('data', (chunk: Buffer) => {
    inflated += chunk.length;
    progress.onProgress?.({
      stage: 'export',
      bytes: inflated,
      ...(Number.isFinite(total) ? { total } : {}),
      message: `(${bytes(sent)} sent)`,
    });
  });
  counter.on('error', () => undefined); // only a progress meter
  res.on('data', (chunk: Buffer) => {
    sent += chunk.length;
    counter.write(chunk);
  });
  res.on('end', () => counter.end());
}

export const exportCommand: CommandModule<GlobalArgs, ExportArgs> = {
  command: 'export <id>',
  describe: 'write a good checkpoint as a signed archive, to a file or stdout',
  builder: (y) =>
    y
      .positional('id', { type: 'string', demandOption: true, describe: 'the checkpoint id' })
      .option('output', { alias: 'o', type: 'string', describe: 'the archive file; - for stdout (default when stdout is not a terminal)' })
      .example('$0 export 20261201T063940Z-4bf4d8 -o job.agentd-archive', 'to a file')
      .example('$0 export 20261201T063940Z-4bf4d8 | ssh host-b agentctl import -', 'straight into another agent'),
  handler: action(async (args: ExportArgs) => {
    const toStdout = args.output === undefined || args.output === '-';
    if (toStdout && process.stdout.isTTY) {
      throw new AgentError('EINVAL', 'refusing to write a binary archive to a terminal: give -o FILE, or redirect stdout');
    }
    const path = `/v1/checkpoints/${encodeURIComponent(args.id)}/archive`;
    const options = clientOptions(args, { defaultMs: null });
    const progress = progressFor(args.json);
    // Loaded here, not at the top: every agentctl command would pay for zlib (docs/bench.md,
    // "agentctl start-up"). With require, not import(): bin/agentctl runs the bundle from V8's code
    // cache, and a script compiled from that cache has lost its dynamic-import callback.
    const zlib = createRequire(import.meta.url)('node:zlib') as typeof import('node:zlib');
    if (toStdout) {
      await download(options, path, process.stdout, (res) => exportProgress(res, progress, zlib)).finally(() => progress.done());
      return;
    }
    const file = args.output!;
    const temporary = join(dirname(file), `.${basename(file)}.partial-${process.pid}`);
    const out: Writable = createWriteStream(temporary, { flags: 'wx', mode: 0o600 });
    try {
      const res = await download(options, path, out, (r) => exportProgress(r, progress, zlib));
      renameSync(temporary, file);
      const size = statSync(file).size;
      const summary = { id: args.id, file, bytes: size, archiveBytes: Number(res.headers['x-archive-bytes']) };
      if (args.json) printJson(summary);
      else print(`exported ${args.id} to ${file} (${bytes(size)})`);
    } catch (err) {
      rmSync(temporary, { force: true });
      throw err;
    } finally {
      progress.done();
    }
  }),
};

interface ImportArgs extends GlobalArgs {
  readonly file: string;
  readonly trust: boolean;
}

export const importCommand: CommandModule<GlobalArgs, ImportArgs> = {
  command: 'import <file>',
  describe: 'bring in an archive as a new checkpoint (from a file, or - for stdin); prints its id',
  builder: (y) =>
    y
      .positional('file', { type: 'string', demandOption: true, describe: 'the archive file, or - for stdin' })
      .option('trust', {
        type: 'boolean',
        default: false,
        describe: 'accept an unsigned archive, or one whose signer is not in the trusted-keys directory (root only)',
      })
      .example('$0 import job.agentd-archive', 'prints the new checkpoint id; then agentctl restore <id>')
      .example('$0 --socket /tmp/b.sock import - < job.agentd-archive', 'from stdin into another agent'),
  handler: action(async (args: ImportArgs) => {
    // yargs hands a lone `-` positional over as the empty string.
    const fromStdin = args.file === '-' || args.file === '';
    let size: number | undefined;
    if (!fromStdin) {
      try {
        const st = statSync(args.file);
        if (!st.isFile()) throw new AgentError('EINVAL', `${args.file} is not a regular file`);
        size = st.size;
      } catch (err) {
        if (err instanceof AgentError) throw err;
        throw new AgentError('ENOENT', `cannot read ${args.file}: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`);
      }
    }
    const input = fromStdin ? process.stdin : createReadStream(args.file, { highWaterMark: 1 << 20 });
    const progress = progressFor(args.json);
    let sent = 0;
    input.on('data', (chunk: Buffer) => {
      sent += chunk.length;
      progress.onProgress?.({ stage: 'import', bytes: sent, ...(size !== undefined ? { total: size } : {}) });
    });
    const path = `/v1/checkpoints/import${args.trust ? '?trust=true' : ''}`;
    try {
      const summary = (await upload(clientOptions(args, { defaultMs: null }), path, input, ARCHIVE_TYPE, size)) as { id: string };
      progress.done();
      if (args.json) printJson(summary);
      else print(summary.id);
    } finally {
      progress.done();
    }
  }),
};
