// The digest a manifest records for an image file (docs/criu.md, "Checksums"). A file of at most
// CHUNK_BYTES has the sha256 of its bytes, as every manifest has always had. A larger one is cut
// into CHUNK_BYTES pieces (the last one shorter), each piece has its sha256, and the file's
// `sha256` is the sha256 of those digests one after the other (32 raw bytes each); the manifest
// says so with `chunkBytes`. The pieces of one file can then be hashed on several threads at once,
// and the pieces CRIU has finished writing while it is still dumping (./follow.ts). The manifest
// (signed in an archive, src/archive) binds the chunk size and the digest of digests, and every
// piece's digest is bound by that: changing one byte changes its piece's digest, so the file's.

import { createHash, type Hash } from 'node:crypto';

/** Piece size of a chunked digest: 16 MiB (a 775 MB page file is 47 pieces). */
export const CHUNK_BYTES = 16 << 20;

/** The chunk size to record for a file of `size` bytes: undefined (a plain sha256) up to CHUNK_BYTES. */
export function chunkBytesFor(size: number): number | undefined {
  return size > CHUNK_BYTES ? CHUNK_BYTES : undefined;
}

/**
 * Whether a manifest's `chunkBytes` is one this agent takes: a whole number of MiB from 1 MiB to
 * 1 GiB (a piece of a few bytes would make millions of jobs of one file; a manifest is input).
 */
export function isChunkBytes(value: unknown): value is number {
  return typeof value === 'number' && Number.isSafeInteger(value) && value >= 1 << 20 && value <= 1 << 30 && value % (1 << 20) === 0;
}

/** How many pieces a file of `size` bytes has with pieces of `chunkBytes`. */
export function chunkCount(size: number, chunkBytes: number): number {
  return Math.max(1, Math.ceil(size / chunkBytes));
}

/** The file's digest from its pieces' sha256 digests (hex), in order. */
export function combineChunks(chunkDigests: readonly string[]): string {
  const outer = createHash('sha256');
  for (const d of chunkDigests) outer.update(Buffer.from(d, 'hex'));
  return outer.digest('hex');
}

/**
 * The digest of a file read front to back in pieces of any size (an archive's stream): the same
 * value as the manifest's, chunked or not.
 */
export class StreamingDigest {
  private readonly outer = createHash('sha256');
  private inner: Hash = createHash('sha256');
  private inChunk = 0;

  constructor(private readonly chunkBytes: number | undefined) {}

  update(data: Buffer): void {
    if (this.chunkBytes === undefined) {
      this.inner.update(data);
      return;
    }
    let offset = 0;
    while (offset < data.length) {
      if (this.inChunk === this.chunkBytes) this.nextChunk();
      const n = Math.min(data.length - offset, this.chunkBytes - this.inChunk);
      this.inner.update(data.subarray(offset, offset + n));
      this.inChunk += n;
      offset += n;
    }
  }

  /** The hex digest; the object is spent afterwards. */
  digest(): string {
    if (this.chunkBytes === undefined) return this.inner.digest('hex');
    this.outer.update(this.inner.digest());
    return this.outer.digest('hex');
  }

  private nextChunk(): void {
    this.outer.update(this.inner.digest());
    this.inner = createHash('sha256');
    this.inChunk = 0;
  }
}
