// Reading an archive (import), strictly: it is hostile input. The compressed stream is capped
// (maxBytes) and so is what it inflates to: before the manifest is read, a few MiB (the version, a
// manifest, a signature); once it is, exactly what the manifest accounts for. Members must be
// regular files, in the order of ./format.ts, each named once; an image file must be one the
// manifest lists, of the size it lists, and hash to its sha256. Nothing is written before the
// version, manifest and signature are read and the caller has accepted the signer (ready()): files
// then go into the directory ready() made, created exclusively, never through a symlink.

import { closeSync, fsyncSync, mkdirSync, openSync, writeSync, constants } from 'node:fs';
import { dirname, join } from 'node:path';
import { Transform, Writable, type Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import tar from 'tar-stream';
import { AgentError } from '../errors/index.js';
import { StreamingDigest, type ImageFile, type Manifest } from '../checkpoint/index.js';
import { createDecompressor } from './codec.js';
import {
  FILES_PREFIX,
  MANIFEST_MEMBER,
  MAX_MANIFEST_BYTES,
  MAX_SIGNATURE_BYTES,
  MAX_VERSION_BYTES,
  SIGNATURE_MEMBER,
  VERSION_MEMBER,
  VERSION_TEXT,
  memberBytes,
  parseManifest,
  parseSignature,
  tarBytes,
  type SignatureRecord,
} from './format.js';

/** What the archive says before any file is written. */
export interface ArchiveHead {
  readonly manifest: Manifest;
  readonly manifestBytes: Buffer;
  /** Absent for an unsigned archive. The signature is not checked yet: ready() does that. */
  readonly signature?: SignatureRecord;
}

export interface ReadOptions {
  /** Refuse a compressed stream longer than this (ArchiveTooLarge). */
  readonly maxBytes: number;
  /** Checks the signer and the room, and makes the directory the image files go into; throws to refuse. */
  readonly ready: (head: ArchiveHead) => Promise<string>;
  readonly signal?: AbortSignal;
  /** Compressed bytes read so far. */
  readonly onBytes?: (n: number) => void;
}

/** An archive over the import limit: the API answers 413. */
export class ArchiveTooLarge extends AgentError {
  constructor(limit: number) {
    super('EINVAL', `archive refused: it is larger than the import limit of ${limit} bytes (agentd --max-import-bytes)`);
  }
}

function refused(message: string): AgentError {
  return new AgentError('EINVAL', `archive refused: ${message}`);
}

/** Counts bytes through, failing once they pass a limit that may change as the archive is read. */
class Meter extends Transform {
  bytes = 0;
  constructor(
    private readonly limit: () => number,
    private readonly tooMany: (limit: number) => Error,
    private readonly onBytes: (n: number) => void = () => undefined,
  ) {
    super();
  }
  override _transform(chunk: Buffer, _encoding: BufferEncoding, callback: (err?: Error | null, data?: Buffer) => void): void {
    this.bytes += chunk.length;
    this.onBytes(chunk.length);
    const limit = this.limit();
    if (this.bytes > limit) callback(this.tooMany(limit));
    else callback(null, chunk);
  }
}

async function readSmall(entry: Readable, name: string, max: number): Promise<Buffer> {
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const chunk of entry as AsyncIterable<Buffer>) {
    size += chunk.length;
    if (size > max) throw refused(`${name} is larger than ${max} bytes`);
    chunks.push(chunk);
  }
  return Buffer.concat(chunks);
}

/** Writes one image file exclusively (O_EXCL, O_NOFOLLOW) and checks its sha256 as it goes. */
async function writeImageFile(entry: Readable, dir: string, file: ImageFile): Promise<void> {
  const path = join(dir, file.path);
  mkdirSync(dirname(path), { recursive: true, mode: 0o700 });
  const fd = openSync(path, constants.O_WRONLY | constants.O_CREAT | constants.O_EXCL | constants.O_NOFOLLOW, 0o600);
  const hash = new StreamingDigest(file.chunkBytes);
  let size = 0;
  try {
    await pipeline(
      entry,
      new Writable({
        write(chunk: Buffer, _encoding, callback) {
          size += chunk.length;
          if (size > file.size)
            return callback(refused(`${FILES_PREFIX}${file.path} holds more than the ${file.size} bytes its manifest lists`));
          hash.update(chunk);
          try {
            for (let off = 0; off < chunk.length;) off += writeSync(fd, chunk, off);
            callback();
          } catch (err) {
            callback(err as Error);
          }
        },
      }),
    );
    if (size !== file.size) throw refused(`${FILES_PREFIX}${file.path} holds ${size} bytes, its manifest lists ${file.size}`);
    if (hash.digest() !== file.sha256) throw refused(`${FILES_PREFIX}${file.path} does not match its sha256 in the manifest`);
    fsyncSync(fd);
  } finally {
    closeSync(fd);
  }
}

/** Why a member name is out of place, for the message. */
function describeStray(name: string): string {
  if (name.startsWith('/')) return 'an absolute path';
  if (name.split('/').includes('..')) return "a path that climbs out with '..'";
  return 'not in the manifest';
}

const TYPE_WORDS: Record<string, string> = {
  symlink: 'a symbolic link',
  link: 'a hard link',
  'character-device': 'a character device',
  'block-device': 'a block device',
  directory: 'a directory',
  fifo: 'a FIFO',
  'contiguous-file': 'a contiguous file',
};

// The slack allowed after the last member for the end of the tar stream: tar(1) pads the stream to
// its record size, 20 blocks by default, where we write the two zero blocks alone.
const END_SLACK = 20 * 512;
// Before the manifest is known: the version and manifest members and a signature.
const HEAD_LIMIT = memberBytes(MAX_VERSION_BYTES) + memberBytes(MAX_MANIFEST_BYTES) + memberBytes(MAX_SIGNATURE_BYTES);

/**
 * Reads a whole archive from `input`, writing its image files into the directory ready() returns.
 * Resolves with the head once every file is there and verified and the stream has ended cleanly
 * (the compressed stream's own checksum included). Throws EINVAL naming the entry and the cause,
 * whatever ready() throws, or ArchiveTooLarge; the caller removes the directory then.
 */
export async function readArchive(input: Readable, options: ReadOptions): Promise<ArchiveHead> {
  let inflateLimit = HEAD_LIMIT + END_SLACK;
  const compressed = new Meter(
    () => options.maxBytes,
    (limit) => new ArchiveTooLarge(limit),
    options.onBytes,
  );
  const inflated = new Meter(
    () => inflateLimit,
    (limit) => refused(`it inflates past the ${limit} bytes its manifest accounts for (a decompression bomb?)`),
  );
  const extract = tar.extract();
  const reading = pipeline(input, compressed, createDecompressor(), inflated, extract, options.signal ? { signal: options.signal } : {});
  // The entry loop's own failure is the one to report; the pipeline then fails with it too.
  const settled = reading.then(
    () => undefined,
    (err: unknown) => err,
  );

  let versionSeen = false;
  let manifestBytes: Buffer | undefined;
  let manifest: Manifest | undefined;
  let signature: SignatureRecord | undefined;
  let dir: string | undefined;
  const wanted = new Map<string, ImageFile>();
  const done = new Set<string>();
  let current = '(before the first member)';

  const head = (): ArchiveHead => ({ manifest: manifest!, manifestBytes: manifestBytes!, ...(signature ? { signature } : {}) });
  const beReady = async () => {
    if (dir !== undefined) return;
    dir = await options.ready(head());
  };

  try {
    for await (const entry of extract as AsyncIterable<Readable & { header: tar.Header }>) {
      const header = entry.header;
      const name = header.name;
      current = JSON.stringify(name.slice(0, 200));
      if (header.type !== 'file') {
        throw refused(`entry ${current} is ${TYPE_WORDS[header.type ?? ''] ?? `of type ${header.type}`}: only regular files are allowed`);
      }
      if (header.pax) throw refused(`entry ${current} carries a pax extended header, which the format does not use`);
      if (!versionSeen) {
        if (name !== VERSION_MEMBER) throw refused(`the first entry must be ${VERSION_MEMBER}, found ${current}: not an agentd archive`);
        const text = (await readSmall(entry, name, MAX_VERSION_BYTES)).toString('utf8');
        if (text !== VERSION_TEXT) {
          const version = /^agentd-archive (\S+)\n?$/.exec(text)?.[1];
          throw refused(
            version !== undefined
              ? `format version ${JSON.stringify(version.slice(0, 20))} is not one this agent reads (${VERSION_TEXT.trim()})`
              : `${VERSION_MEMBER} does not say "${VERSION_TEXT.trim()}"`,
          );
        }
        versionSeen = true;
        continue;
      }
      if (manifest === undefined) {
        if (name !== MANIFEST_MEMBER) throw refused(`the second entry must be ${MANIFEST_MEMBER}, found ${current}`);
        manifestBytes = await readSmall(entry, name, MAX_MANIFEST_BYTES);
        manifest = parseManifest(manifestBytes);
        if (manifest.files.length === 0) throw refused('the manifest lists no image files');
        for (const f of manifest.files) wanted.set(FILES_PREFIX + f.path, f);
        inflateLimit = tarBytes(manifestBytes.length, MAX_SIGNATURE_BYTES, manifest.files) + END_SLACK;
        continue;
      }
      if (name === SIGNATURE_MEMBER && signature === undefined && dir === undefined) {
        signature = parseSignature(await readSmall(entry, name, MAX_SIGNATURE_BYTES));
        continue;
      }
      if (name === VERSION_MEMBER || name === MANIFEST_MEMBER || name === SIGNATURE_MEMBER) {
        throw refused(`entry ${current} appears twice (or out of its place)`);
      }
      const file = wanted.get(name);
      if (!file) throw refused(`entry ${current} is ${describeStray(name)}`);
      if (done.has(name)) throw refused(`entry ${current} appears twice`);
      if (header.size !== file.size) {
        throw refused(
          `entry ${current} is ${header.size} bytes, its manifest lists ${file.size}${(header.size ?? 0) > file.size ? ' (larger than the manifest allows)' : ''}`,
        );
      }
      await beReady();
      await writeImageFile(entry, dir!, file);
      done.add(name);
    }
    const err = await settled;
    if (err) throw err;
    if (!versionSeen) throw refused('the archive is empty');
    if (manifest === undefined) throw refused(`the archive ends before its ${MANIFEST_MEMBER}`);
    const missing = [...wanted.keys()].filter((n) => !done.has(n));
    if (missing.length > 0) {
      throw refused(
        `the archive ends without ${missing.length} of the manifest's files (${missing.slice(0, 3).join(', ')}${missing.length > 3 ? ', ...' : ''}): truncated?`,
      );
    }
    return head();
  } catch (err) {
    extract.destroy();
    // Our own refusal first; else the pipeline's error (zlib, tar, a limit), which says more than
    // the entry loop's "premature close".
    const piped = await settled;
    throw describe(err instanceof AgentError ? err : (piped ?? err), current);
  }
}

/** An AgentError as it is; anything else (zlib, tar-stream, a premature end) said as a refusal naming where it happened. */
function describe(err: unknown, current: string): AgentError {
  if (err instanceof AgentError) return err;
  const e = err as NodeJS.ErrnoException;
  if (e?.name === 'AbortError') return new AgentError('EINTR', `import cancelled: ${(e.cause as Error)?.message ?? e.message}`);
  if (typeof e?.code === 'string' && (e.code.startsWith('Z_') || e.code.startsWith('ERR__ERROR') || e.code.startsWith('ERR_BROTLI'))) {
    return refused(`the compressed stream is corrupt or truncated at entry ${current} (${e.message})`);
  }
  if (e?.code === 'ERR_STREAM_PREMATURE_CLOSE' || /Unexpected end of data/.test(e?.message ?? '')) {
    return refused(`the archive is truncated at entry ${current}`);
  }
  if (/Invalid tar header|Header exceeds max size|Invalid header/.test(e?.message ?? '')) {
    return refused(`a tar header after entry ${current} is malformed (${e.message})`);
  }
  if (typeof e?.code === 'string' && /^E[A-Z]+$/.test(e.code))
    return new AgentError('EIO', `import failed at entry ${current}: ${e.message}`);
  return refused(`at entry ${current}: ${e?.message ?? String(err)}`);
}
