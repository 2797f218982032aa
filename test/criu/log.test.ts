import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { criuErrorLines, failureCode } from '../../src/criu/index.js';

// Lines as CRIU 4.1.1 writes them on this host (-v4), shortened.
const LOG = [
  '(00.000039) Version: 4.1.1 (gitid 0)',
  "(00.070444) Error (criu/util.c:1533): rlimit: Can't setup RLIMIT_NOFILE for self: Operation not permitted",
  '(00.072576) freezing cgroup /sys/fs/cgroup/freezer/x: 100 x 100ms attempts, timeout: 10s',
  '(00.073818) Warn  (criu/seize.c:404): Unexpected process 9635 in the freezer cgroup (status 0x80057f)',
  '(00.134177)  11237: Error (criu/files-reg.c:2175): File tmp/x/cnt has bad size 4 (expect 0)',
  '(00.143883) Error (criu/cr-restore.c:2320): Restoring FAILED.',
  '(00.150000) Dumping path for 3 fd via self 12 [/tmp/ErrorReports/x]',
].join('\n');

describe('CRIU log reading', () => {
  test('error lines: timestamps stripped, the harmless RLIMIT_NOFILE line and warnings left out', () => {
    assert.deepEqual(criuErrorLines(LOG), [
      '11237: Error (criu/files-reg.c:2175): File tmp/x/cnt has bad size 4 (expect 0)',
      'Error (criu/cr-restore.c:2320): Restoring FAILED.',
    ]);
  });

  test('a full disk maps to ENOSPC, anything else to ECRIU', () => {
    assert.equal(failureCode('(00.1) Error (criu/page-xfer.c:1) Unable to write: No space left on device'), 'ENOSPC');
    assert.equal(failureCode('Error (x): write: Disk quota exceeded'), 'ENOSPC');
    assert.equal(failureCode(LOG), 'ECRIU');
  });
});
