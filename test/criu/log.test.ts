import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { criuErrorLines, criuFailure, failureCode, knownMismatch, knownRefusal, logFacts } from '../../src/criu/index.js';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { isAgentError } from '../../src/errors/index.js';

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

// A dump by CRIU 4.1.1 on this host's Linux 6.18 of a process holding a TCP socket (the lines as it
// wrote them, -v4, shortened). The real 4.1.1 is no longer installed: it fails the self-test here.
const PASSCRED_LOG = [
  '(00.000133) Version: 4.1.1 (gitid 0)',
  '(00.000145) Running on vm Linux 6.18.44-fc-v1045 #1 SMP PREEMPT_DYNAMIC @0 x86_64',
  "(00.028171) Error (criu/util.c:1533): rlimit: Can't setup RLIMIT_NOFILE for self: Operation not permitted",
  "(00.034127) Error (criu/sockets.c:628): sockets: Can't get 1:16 opt: Operation not supported",
  "(00.034130) Error (criu/sockets.c:628): sockets: Can't get 1:34 opt: Operation not supported",
  '(00.034152) Error (criu/cr-dump.c:1681): Dump files (pid: 10910) failed with -1',
  '(00.034542) Error (criu/cr-dump.c:2111): Dumping FAILED.',
].join('\n');

describe('a known CRIU/kernel mismatch: SO_PASSCRED on Linux >= 6.16 with CRIU < 4.2', () => {
  test('the log says its own CRIU version and kernel', () => {
    assert.deepEqual(logFacts(PASSCRED_LOG), { version: '4.1.1', kernel: '6.18.44-fc-v1045' });
    assert.deepEqual(logFacts('no header here'), {});
  });

  test('CRIU 4.1.1 on 6.18: says what is wrong and what to install', () => {
    const hint = knownMismatch(PASSCRED_LOG);
    assert.ok(hint);
    assert.match(hint, /^CRIU 4\.1\.1 cannot dump sockets on Linux >= 6\.16 \(this is 6\.18\.44-fc-v1045; kernel commit 7d8d93fdde50b/);
    assert.match(hint, /install CRIU >= 4\.2 \(npm run setup builds it\)$/);
  });

  test('only the 1:34 (SO_PASSSEC) line is enough', () => {
    const only34 = PASSCRED_LOG.split('\n')
      .filter((l) => !l.includes('1:16'))
      .join('\n');
    assert.match(knownMismatch(only34) ?? '', /^CRIU 4\.1\.1 cannot dump sockets/);
  });

  test('not a mismatch: CRIU 4.2 or newer, a kernel before 6.16, or another error', () => {
    assert.equal(knownMismatch(PASSCRED_LOG.replace('Version: 4.1.1', 'Version: 4.2')), undefined);
    assert.equal(knownMismatch(PASSCRED_LOG.replace('Version: 4.1.1', 'Version: 4.10')), undefined);
    assert.equal(knownMismatch(PASSCRED_LOG.replace('Linux 6.18.44-fc-v1045', 'Linux 6.15.9')), undefined);
    assert.match(knownMismatch(PASSCRED_LOG.replace('Linux 6.18.44-fc-v1045', 'Linux 6.16.0')) ?? '', /this is 6\.16\.0/);
    assert.equal(knownMismatch(LOG), undefined);
  });

  test('a log without its head: the versions the caller knows', () => {
    const tail = PASSCRED_LOG.split('\n').slice(2).join('\n');
    assert.equal(knownMismatch(tail), undefined, 'no kernel known: no claim');
    assert.match(
      knownMismatch(tail, { kernel: '6.18.1' }) ?? '',
      /^CRIU \(version unknown\) cannot dump sockets on Linux >= 6\.16 \(this is 6\.18\.1;/,
    );
    assert.match(knownMismatch(tail, { kernel: '6.18.1', criuVersion: '3.17.1' }) ?? '', /^CRIU 3\.17\.1 cannot/);
    assert.equal(knownMismatch(tail, { kernel: '6.18.1', criuVersion: '4.2.1' }), undefined);
  });

  test('the dump error is still ECRIU, says the mismatch first and quotes CRIU', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'agentd-criu-log-'));
    try {
      const logPath = join(dir, 'dump.log');
      writeFileSync(logPath, PASSCRED_LOG + '\n');
      const err = await criuFailure('criu dump of pid 10910', logPath, { exitCode: 1, args: ['dump'] });
      assert.ok(isAgentError(err, 'ECRIU'));
      assert.match(
        err.message,
        /^criu dump of pid 10910 failed \(exit 1\): CRIU 4\.1\.1 cannot dump sockets on Linux >= 6\.16 .*install CRIU >= 4\.2 \(npm run setup builds it\) \(CRIU: Error \(criu\/sockets\.c:628\): sockets: Can't get 1:16 opt/,
      );
      assert.match(String(err.details?.mismatch), /^CRIU 4\.1\.1 cannot dump sockets/);

      writeFileSync(logPath, LOG + '\n');
      const other = await criuFailure('criu restore', logPath, { exitCode: 1, args: ['restore'] });
      assert.ok(isAgentError(other, 'ECRIU'));
      assert.doesNotMatch(other.message, /cannot dump sockets/);
      assert.equal(other.details?.mismatch, undefined);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});

// What CRIU 4.2.1 logged here dumping a cgroup holding `strace -f sleep 1000` (frozen, as agentd
// dumps it): a warning with the EPERM, then a misleading "zombie" error, once every 100 ms for 10 s.
const TRACED_LOG = [
  '(00.045567) Warn  (compel/src/lib/infect.c:132): Unable to interrupt task: 12662 (Operation not permitted)',
  '(00.045596) Error (criu/seize.c:335): zombie 12662 (comm sleep) found while seizing',
].join('\n');

describe('programs CRIU refuses', () => {
  test('a traced task: named with its tracer, or said plainly when the tracer is gone', () => {
    const traced = knownRefusal(TRACED_LOG, (pid) => (pid === 12662 ? { pid: 12658, comm: 'strace' } : undefined));
    assert.match(
      traced ?? '',
      /^process 12662 cannot be checkpointed: it is traced by pid 12658 \(strace\), and CRIU must trace every process it dumps/,
    );
    assert.match(
      knownRefusal(TRACED_LOG, () => undefined) ?? '',
      /^process 12662 cannot be checkpointed: CRIU was not allowed to trace it/,
    );
    assert.equal(
      knownRefusal(LOG, () => ({ pid: 1, comm: 'x' })),
      undefined,
      'any other failure is left as CRIU said it',
    );
  });
});
