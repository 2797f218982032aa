// The timings line of `agentctl checkpoint` and `agentctl show`: pure formatting.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { checkpointTimings, rate } from '../../src/cli/format.js';

test('the window, then the checksums with their throughput and the publishing, then the total', () => {
  const line = checkpointTimings({ frozenWindowMs: 536, dumpMs: 535, hashMs: 885, publishMs: 1, totalMs: 1472 }, 774_500_000);
  assert.equal(line, 'stopped 536 ms (dump 535 ms), checksums 885 ms (875 MB/s), publish 1 ms, total 1.47 s');
});

test('part of the image hashed during the dump: the rate is over the rest, and the share is said', () => {
  assert.equal(
    checkpointTimings(
      { frozenWindowMs: 536, dumpMs: 535, hashMs: 300, hashedDuringDumpBytes: 504_500_000, publishMs: 1, totalMs: 900 },
      774_500_000,
    ),
    'stopped 536 ms (dump 535 ms), checksums 300 ms (900 MB/s; 65% during the dump), publish 1 ms, total 900 ms',
  );
  assert.equal(
    checkpointTimings({ frozenWindowMs: 5, dumpMs: 4, hashMs: 0, hashedDuringDumpBytes: 10, publishMs: 0, totalMs: 6 }, 10),
    'stopped 5 ms (dump 4 ms), checksums 0 ms (100% during the dump), publish 0 ms, total 6 ms',
  );
});

test('a manifest from before hashMs and publishMs were recorded shows without them', () => {
  assert.equal(
    checkpointTimings({ frozenWindowMs: 2264, dumpMs: 450, totalMs: 2302 }, 193_032),
    'stopped 2.26 s (dump 450 ms), total 2.30 s',
  );
  assert.equal(
    checkpointTimings({ frozenWindowMs: 5, dumpMs: 4, hashMs: 0, publishMs: 0, totalMs: 6 }, 10),
    'stopped 5 ms (dump 4 ms), checksums 0 ms, publish 0 ms, total 6 ms',
  );
});

test('rates in decimal units', () => {
  assert.equal(rate(2_500_000_000, 1000), '2.5 GB/s');
  assert.equal(rate(18_400_000, 34), '541 MB/s');
});
