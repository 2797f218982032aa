// The compression of archives: brotli at quality 1 (generic mode, default 4 MiB window), from
// Node's own zlib binding. On our fixtures (docs/archive.md: 64 and 256 MiB memory-pattern
// checkpoints, and 64 MiB of random memory) it compressed 2 to 9 times faster than gzip level 1
// and to a smaller size, gzip level 6 was slower still, and brotli quality 4 gained little size for
// 3 times the time; decompression speeds were alike. `brotli -d` (Debian's brotli package) or any
// brotli library reads it; the inner stream is a plain tar.

import { constants, createBrotliCompress, createBrotliDecompress, type BrotliCompress, type BrotliDecompress } from 'node:zlib';

export const BROTLI_QUALITY = 1;

export function createCompressor(): BrotliCompress {
  return createBrotliCompress({
    params: { [constants.BROTLI_PARAM_QUALITY]: BROTLI_QUALITY, [constants.BROTLI_PARAM_MODE]: constants.BROTLI_MODE_GENERIC },
  });
}

export function createDecompressor(): BrotliDecompress {
  return createBrotliDecompress();
}
