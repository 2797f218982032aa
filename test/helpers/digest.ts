// The digest a manifest records for an image file, computed in the tests on its own terms rather
// than by the product's code (docs/criu.md, "Checksums"): the sha256 of the file's bytes, or for a
// file recorded with `chunkBytes` the sha256 of its pieces' sha256 digests, one after the other.

import { createHash } from 'node:crypto';

/** sha256 (hex) of the raw sha256 of each `chunk`-byte piece of `bytes`, in order. */
export function chunkedSha256(bytes: Buffer, chunk: number): string {
  const outer = createHash('sha256');
  for (let off = 0; off < bytes.length; off += chunk)
    outer.update(
      createHash('sha256')
        .update(bytes.subarray(off, off + chunk))
        .digest(),
    );
  return outer.digest('hex');
}

/** The manifest's digest of `bytes`: plain sha256 without `chunkBytes`, chunked with it. */
export function manifestDigest(bytes: Buffer, chunkBytes?: number): string {
  return chunkBytes === undefined ? createHash('sha256').update(bytes).digest('hex') : chunkedSha256(bytes, chunkBytes);
}
