// Writing an archive (export): the version member, the manifest exactly as it is on disk, its
// signature, then every image file, packed as a tar stream and compressed on the way out. Memory
// stays flat whatever the size: each file is streamed through with backpressure from the client.
// Each file is hashed again as it is read and the stream is broken off (the archive then fails to
// import) if it no longer matches its manifest: the checkpoint was verified before the export began,
// and this catches a file that changed since.

import { sign } from 'node:crypto';
import { createReadStream } from 'node:fs';
import { join } from 'node:path';
import { Transform, type Writable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import tar from 'tar-stream';
import { AgentError } from '../errors/index.js';
import { StreamingDigest, type ImageFile } from '../checkpoint/index.js';
import { createCompressor } from './codec.js';
import { FILES_PREFIX, MANIFEST_MEMBER, SIGNATURE_MEMBER, VERSION_MEMBER, VERSION_TEXT, type SignatureRecord } from './format.js';
import type { SigningKey } from './keys.js';

export interface ArchiveSource {
  readonly id: string;
  /** The checkpoint's directory. */
  readonly dir: string;
  /** manifest.json's bytes as they are on disk: what is signed. */
  readonly manifestBytes: Buffer;
  readonly files: readonly ImageFile[];
  /** The manifest's createdAt: every member's mtime, so that one checkpoint always packs the same. */
  readonly createdAt: Date;
}

/** The signature member for a manifest. */
export function signatureBytes(manifestBytes: Buffer, key: SigningKey): Buffer {
  const record: SignatureRecord = {
    algorithm: 'ed25519',
    publicKey: key.publicKey.raw,
    signature: sign(null, manifestBytes, key.privateKey).toString('hex'),
  };
  return Buffer.from(JSON.stringify(record));
}

/** Passes bytes through, hashing them; checks the digest against the manifest's at the end. */
function verifyingTap(id: string, file: ImageFile, onBytes: (n: number) => void): Transform {
  const hash = new StreamingDigest(file.chunkBytes);
  let size = 0;
  return new Transform({
    transform(chunk: Buffer, _encoding, callback) {
      hash.update(chunk);
      size += chunk.length;
      onBytes(chunk.length);
      callback(null, chunk);
    },
    flush(callback) {
      const digest = hash.digest();
      if (size !== file.size || digest !== file.sha256) {
        callback(
          new AgentError(
            'EIO',
            `image file ${file.path} of checkpoint ${id} changed while it was exported (size or sha256 differ from its manifest)`,
          ),
        );
      } else callback();
    },
  });
}

/**
 * Writes the archive of `source` to `out` (an HTTP response, a file). Rejects when `out` fails or
 * goes away, when `signal` aborts, or when a file differs from its manifest; `out` is then
 * destroyed, never ended, so that a receiver sees a truncated archive and not a complete one.
 */
export async function writeArchive(
  source: ArchiveSource,
  key: SigningKey,
  out: Writable,
  options: { signal?: AbortSignal; onBytes?: (n: number) => void } = {},
): Promise<void> {
  const pack = tar.pack();
  const common = { mode: 0o600, uid: 0, gid: 0, mtime: source.createdAt, type: 'file' as const };
  const onBytes = options.onBytes ?? (() => undefined);
  // One abort for both halves: a reader that goes away must also end the file being packed (its
  // entry would otherwise wait forever for a pack that no longer drains), and a file that fails
  // must end the compressed stream.
  const stop = new AbortController();
  const abort = (err: unknown) => stop.abort(err);
  const forward = () => abort(options.signal?.reason);
  options.signal?.addEventListener('abort', forward, { once: true });
  if (options.signal?.aborted) forward();
  const packing = (async () => {
    pack.entry({ ...common, name: VERSION_MEMBER }, VERSION_TEXT);
    pack.entry({ ...common, name: MANIFEST_MEMBER }, source.manifestBytes);
    pack.entry({ ...common, name: SIGNATURE_MEMBER }, signatureBytes(source.manifestBytes, key));
    for (const file of source.files) {
      stop.signal.throwIfAborted();
      const entry = pack.entry({ ...common, name: FILES_PREFIX + file.path, size: file.size });
      await pipeline(
        createReadStream(join(source.dir, file.path), { highWaterMark: 1 << 20 }),
        verifyingTap(source.id, file, onBytes),
        entry,
        { signal: stop.signal },
      );
    }
    pack.finalize();
  })();
  const writing = pipeline(pack, createCompressor(), out, { signal: stop.signal });
  packing.catch(abort);
  writing.catch(abort);
  try {
    await Promise.all([packing, writing]);
  } catch (err) {
    out.destroy();
    // The first failure is the cause; the other half then fails only with the abort.
    throw stop.signal.reason ?? err;
  } finally {
    options.signal?.removeEventListener('abort', forward);
  }
}
