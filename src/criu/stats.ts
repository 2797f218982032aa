// CRIU's stats-dump and stats-restore files.
//
// Layout (measured, CRIU 4.1.1): u32 IMG_SERVICE_MAGIC 0x55105940, u32 STATS_MAGIC 0x57093306,
// u32 length, then one protobuf StatsEntry of that length; all little-endian. The schema below is
// ours, built with protobufjs's reflection API; field numbers follow CRIU's images/stats.proto.

import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import protobuf from 'protobufjs';
import { AgentError, fromSystemError } from '../errors/index.js';

const IMG_SERVICE_MAGIC = 0x55105940;
const STATS_MAGIC = 0x57093306;
const HEADER_BYTES = 12;

/** After a dump. Times in microseconds, counts in pages. Fields CRIU did not write are 0. */
export type DumpStats = {
  /** Freezing the tasks (seizing them; with --freeze-cgroup, the cgroup freeze). */
  freezingTime: number;
  /** How long the tasks were held stopped by CRIU. */
  frozenTime: number;
  /** Collecting the memory to dump. */
  memdumpTime: number;
  /** Writing it to the images. */
  memwriteTime: number;
  pagesScanned: number;
  pagesSkippedParent: number;
  pagesWritten: number;
  irmapResolve: number;
  pagesLazy: number;
  pagePipes: number;
  pagePipeBufs: number;
  shpagesScanned: number;
  shpagesSkippedParent: number;
  shpagesWritten: number;
};

/** After a restore. Times in microseconds. */
export type RestoreStats = {
  pagesCompared: number;
  pagesSkippedCow: number;
  forkingTime: number;
  restoreTime: number;
  pagesRestored: number;
};

const DUMP_FIELDS: readonly [keyof DumpStats, number, 'uint32' | 'uint64'][] = [
  ['freezingTime', 1, 'uint32'],
  ['frozenTime', 2, 'uint32'],
  ['memdumpTime', 3, 'uint32'],
  ['memwriteTime', 4, 'uint32'],
  ['pagesScanned', 5, 'uint64'],
  ['pagesSkippedParent', 6, 'uint64'],
  ['pagesWritten', 7, 'uint64'],
  ['irmapResolve', 8, 'uint32'],
  ['pagesLazy', 9, 'uint64'],
  ['pagePipes', 10, 'uint64'],
  ['pagePipeBufs', 11, 'uint64'],
  ['shpagesScanned', 12, 'uint64'],
  ['shpagesSkippedParent', 13, 'uint64'],
  ['shpagesWritten', 14, 'uint64'],
];

const RESTORE_FIELDS: readonly [keyof RestoreStats, number, 'uint32' | 'uint64'][] = [
  ['pagesCompared', 1, 'uint64'],
  ['pagesSkippedCow', 2, 'uint64'],
  ['forkingTime', 3, 'uint32'],
  ['restoreTime', 4, 'uint32'],
  ['pagesRestored', 5, 'uint64'],
];

// All fields optional here (some are required in CRIU's proto2 schema): a missing one reads as 0
// instead of failing the decode of an otherwise useful file.
function messageType(name: string, fields: readonly [string, number, string][]): protobuf.Type {
  const type = new protobuf.Type(name);
  for (const [field, id, kind] of fields) type.add(new protobuf.Field(field, id, kind, 'optional'));
  return type;
}

const statsEntry = (() => {
  const root = new protobuf.Root();
  const dump = messageType('DumpStatsEntry', DUMP_FIELDS);
  const restore = messageType('RestoreStatsEntry', RESTORE_FIELDS);
  const entry = new protobuf.Type('StatsEntry').add(new protobuf.Field('dump', 1, 'DumpStatsEntry', 'optional'));
  entry.add(new protobuf.Field('restore', 2, 'RestoreStatsEntry', 'optional'));
  root.add(dump).add(restore).add(entry);
  return root.lookupType('StatsEntry');
})();

interface DecodedEntry {
  dump?: Record<string, number>;
  restore?: Record<string, number>;
}

/** Decodes a whole stats file (header and StatsEntry). `what` names it in errors. */
export function decodeStatsFile(buffer: Buffer, what = 'stats file'): DecodedEntry {
  if (buffer.length < HEADER_BYTES) {
    throw new AgentError('EIO', `${what} is too short for a CRIU stats file (${buffer.length} bytes)`);
  }
  const magic = buffer.readUInt32LE(0);
  const kind = buffer.readUInt32LE(4);
  if (magic !== IMG_SERVICE_MAGIC || kind !== STATS_MAGIC) {
    throw new AgentError('EIO', `${what} is not a CRIU stats file (magic 0x${magic.toString(16)} 0x${kind.toString(16)})`);
  }
  const length = buffer.readUInt32LE(8);
  if (HEADER_BYTES + length > buffer.length) {
    throw new AgentError('EIO', `${what} is truncated: the entry claims ${length} bytes, ${buffer.length - HEADER_BYTES} are there`);
  }
  try {
    const message = statsEntry.decode(buffer.subarray(HEADER_BYTES, HEADER_BYTES + length));
    return statsEntry.toObject(message, { longs: Number }) as DecodedEntry;
  } catch (err) {
    throw new AgentError('EIO', `${what} does not decode as a StatsEntry: ${(err as Error).message}`, { cause: err });
  }
}

function pick<T extends Record<string, number>>(
  fields: readonly [keyof T, number, string][],
  values: Record<string, number> | undefined,
): T {
  const out: Record<string, number> = {};
  for (const [name] of fields) out[name as string] = Number(values?.[name as string] ?? 0);
  return out as T;
}

async function readStats(path: string): Promise<DecodedEntry> {
  let buffer: Buffer;
  try {
    buffer = await readFile(path);
  } catch (err) {
    throw fromSystemError(err, `failed to read CRIU stats ${path}`);
  }
  return decodeStatsFile(buffer, path);
}

/** stats-dump in dir (the images directory of a dump). */
export async function readDumpStats(dir: string): Promise<DumpStats> {
  const path = join(dir, 'stats-dump');
  const entry = await readStats(path);
  if (!entry.dump) throw new AgentError('EIO', `${path} holds no dump statistics`);
  return pick<DumpStats>(DUMP_FIELDS, entry.dump);
}

/** stats-restore in dir (the work directory of a restore, by default its images directory). */
export async function readRestoreStats(dir: string): Promise<RestoreStats> {
  const path = join(dir, 'stats-restore');
  const entry = await readStats(path);
  if (!entry.restore) throw new AgentError('EIO', `${path} holds no restore statistics`);
  return pick<RestoreStats>(RESTORE_FIELDS, entry.restore);
}
