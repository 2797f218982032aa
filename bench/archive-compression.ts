// Compression of checkpoint archives, measured: every image file of a checkpoint directory (as an
// export streams them) through each codec Node 20 has without native builds, one after another,
// timing compression and then decompression of the result, and the sizes. The figures in
// docs/archive.md come from this script. Usage: node dist/bench/archive-compression.js DIR...

import { createReadStream, readdirSync, statSync } from 'node:fs';
import { join, relative } from 'node:path';
import { performance } from 'node:perf_hooks';
import { Readable, Writable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { constants, createBrotliCompress, createBrotliDecompress, createGunzip, createGzip, type BrotliOptions } from 'node:zlib';

interface Codec {
  readonly name: string;
  compress(): NodeJS.ReadWriteStream;
  decompress(): NodeJS.ReadWriteStream;
}

const brotli = (quality: number): BrotliOptions => ({
  params: { [constants.BROTLI_PARAM_QUALITY]: quality, [constants.BROTLI_PARAM_MODE]: constants.BROTLI_MODE_GENERIC },
});

const CODECS: Codec[] = [
  { name: 'gzip -1', compress: () => createGzip({ level: 1 }), decompress: () => createGunzip() },
  { name: 'gzip -6', compress: () => createGzip({ level: 6 }), decompress: () => createGunzip() },
  { name: 'brotli q1', compress: () => createBrotliCompress(brotli(1)), decompress: () => createBrotliDecompress() },
  { name: 'brotli q4', compress: () => createBrotliCompress(brotli(4)), decompress: () => createBrotliDecompress() },
];

function filesOf(dir: string): string[] {
  const out: string[] = [];
  const walk = (sub: string) => {
    for (const e of readdirSync(sub, { withFileTypes: true })) {
      if (e.isDirectory()) walk(join(sub, e.name));
      else if (e.isFile()) out.push(join(sub, e.name));
    }
  };
  walk(dir);
  return out.sort();
}

function concatenated(files: readonly string[]): Readable {
  return Readable.from(
    (async function* () {
      for (const f of files) yield* createReadStream(f, { highWaterMark: 1 << 20 });
    })(),
  );
}

function collector(chunks?: Buffer[]): Writable & { bytes: number } {
  const sink = new Writable({
    write(chunk: Buffer, _enc, cb) {
      sink.bytes += chunk.length;
      chunks?.push(chunk);
      cb();
    },
  }) as Writable & { bytes: number };
  sink.bytes = 0;
  return sink;
}

async function main(): Promise<void> {
  for (const dir of process.argv.slice(2)) {
    const files = filesOf(dir);
    const total = files.reduce((sum, f) => sum + statSync(f).size, 0);
    console.log(`${dir}: ${files.length} files, ${(total / 2 ** 20).toFixed(1)} MiB (${files.map((f) => relative(dir, f)).join(' ')})`);
    for (const codec of CODECS) {
      const chunks: Buffer[] = [];
      const out = collector(chunks);
      let t = performance.now();
      await pipeline(concatenated(files), codec.compress(), out);
      const packMs = performance.now() - t;
      const back = collector();
      t = performance.now();
      await pipeline(Readable.from(chunks), codec.decompress(), back);
      const unpackMs = performance.now() - t;
      if (back.bytes !== total) throw new Error(`${codec.name}: ${back.bytes} bytes back of ${total}`);
      const mibs = (ms: number) => (total / 2 ** 20 / (ms / 1000)).toFixed(0);
      console.log(
        `  ${codec.name.padEnd(10)} ${(out.bytes / 2 ** 20).toFixed(2).padStart(8)} MiB (${((100 * out.bytes) / total).toFixed(2)} %)  ` +
          `compress ${(packMs / 1000).toFixed(2)} s (${mibs(packMs)} MiB/s)  decompress ${(unpackMs / 1000).toFixed(2)} s (${mibs(unpackMs)} MiB/s)`,
      );
    }
  }
}

await main();
