import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, test } from 'node:test';
import { isAgentError } from '../../src/errors/index.js';
import { decodeStatsFile, readDumpStats, readRestoreStats } from '../../src/criu/index.js';
import { FIXTURES_DIR } from '../../fixtures/criu/harness.js';

// stats-dump.bin and stats-restore.bin: written by CRIU 4.1.1 on this host for one small process.
const dumpFile = readFileSync(join(FIXTURES_DIR, 'stats-dump.bin'));
const restoreFile = readFileSync(join(FIXTURES_DIR, 'stats-restore.bin'));

describe('CRIU stats files', () => {
  const dir = mkdtempSync(join(tmpdir(), 'agentd-criu-stats-'));
  after(() => rmSync(dir, { recursive: true, force: true }));

  test('stats-dump decodes: magics, length, every field in camelCase', async () => {
    writeFileSync(join(dir, 'stats-dump'), dumpFile);
    assert.deepEqual(await readDumpStats(dir), {
      freezingTime: 1953,
      frozenTime: 21646,
      memdumpTime: 1095,
      memwriteTime: 118,
      pagesScanned: 41,
      pagesSkippedParent: 0,
      pagesWritten: 27,
      irmapResolve: 0,
      pagesLazy: 0,
      pagePipes: 6,
      pagePipeBufs: 6,
      shpagesScanned: 0,
      shpagesSkippedParent: 0,
      shpagesWritten: 0,
    });
  });

  test('stats-restore decodes', async () => {
    writeFileSync(join(dir, 'stats-restore'), restoreFile);
    assert.deepEqual(await readRestoreStats(dir), {
      pagesCompared: 0,
      pagesSkippedCow: 0,
      forkingTime: 5,
      restoreTime: 26421,
      pagesRestored: 27,
    });
  });

  test('a dump file read as restore stats (and the reverse) is EIO, not zeros', async () => {
    const swapped = mkdtempSync(join(dir, 'swapped-'));
    writeFileSync(join(swapped, 'stats-restore'), dumpFile);
    writeFileSync(join(swapped, 'stats-dump'), restoreFile);
    await assert.rejects(readRestoreStats(swapped), (err: unknown) => isAgentError(err, 'EIO'));
    await assert.rejects(readDumpStats(swapped), (err: unknown) => isAgentError(err, 'EIO'));
  });

  test('bad magic, truncation and garbage are EIO naming the file', () => {
    const badMagic = Buffer.from(dumpFile);
    badMagic.writeUInt32LE(0x54564319, 0);
    assert.throws(
      () => decodeStatsFile(badMagic, 'X'),
      (err: unknown) => isAgentError(err, 'EIO') && /X is not a CRIU stats file/.test(err.message),
    );
    assert.throws(
      () => decodeStatsFile(dumpFile.subarray(0, dumpFile.length - 3), 'X'),
      (err: unknown) => isAgentError(err, 'EIO') && /truncated/.test(err.message),
    );
    assert.throws(
      () => decodeStatsFile(dumpFile.subarray(0, 6), 'X'),
      (err: unknown) => isAgentError(err, 'EIO') && /too short/.test(err.message),
    );
    const garbage = Buffer.concat([dumpFile.subarray(0, 8), Buffer.from([4, 0, 0, 0, 0xff, 0xff, 0xff, 0xff])]);
    assert.throws(
      () => decodeStatsFile(garbage, 'X'),
      (err: unknown) => isAgentError(err, 'EIO'),
    );
  });

  test('a missing stats file is ENOENT', async () => {
    await assert.rejects(readDumpStats(join(dir, 'nowhere')), (err: unknown) => isAgentError(err, 'ENOENT'));
  });
});
