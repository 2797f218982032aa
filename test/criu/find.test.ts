import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { chmodSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { release, tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, test } from 'node:test';
import { isAgentError } from '../../src/errors/index.js';
import { criuSearchPath, findCriu, readSelfTest, requireWorkingCriu, SELF_TEST_RECORD } from '../../src/criu/index.js';

describe('findCriu', () => {
  const scratch = mkdtempSync(join(tmpdir(), 'agentd-criu-find-'));
  after(() => rmSync(scratch, { recursive: true, force: true }));

  test('finds the installed CRIU, reads its version and passes criu check', async () => {
    const info = await findCriu();
    assert.match(info.path, /^\/.*\/criu$/);
    assert.match(info.version, /^\d+\.\d+/);
    assert.equal(info.check.ok, true, info.check.output);
    assert.match(info.check.output, /Looks good/);
    assert.deepEqual(await requireWorkingCriu(info.path), info);
  });

  test('the search path always includes the sbin directories', () => {
    const dirs = criuSearchPath('/usr/bin:relative/dir:/bin');
    assert.deepEqual(dirs.slice(0, 2), ['/usr/bin', '/bin']);
    for (const d of ['/usr/local/sbin', '/usr/sbin', '/sbin']) assert.ok(dirs.includes(d));
  });

  test('a configured path that does not exist: ECRIU naming the path and what to install', async () => {
    const bogus = join(scratch, 'no-such-criu');
    await assert.rejects(findCriu(bogus), (err: unknown) => {
      assert.ok(isAgentError(err, 'ECRIU'));
      assert.ok(err.message.includes(bogus), err.message);
      assert.match(err.message, /npm run setup/);
      assert.match(err.message, /apt-get install criu/);
      return true;
    });
  });

  test('a relative configured path is EINVAL', async () => {
    await assert.rejects(findCriu('criu'), (err: unknown) => isAgentError(err, 'EINVAL'));
  });

  test('an executable that is not CRIU: ECRIU', async () => {
    const fake = join(scratch, 'fake-criu');
    writeFileSync(fake, '#!/bin/sh\necho "not criu"\nexit 3\n');
    chmodSync(fake, 0o755);
    await assert.rejects(findCriu(fake), (err: unknown) => {
      assert.ok(isAgentError(err, 'ECRIU'));
      assert.match(err.message, /--version failed \(exit 3\): not criu/);
      return true;
    });
  });

  test('a CRIU whose check fails is reported by findCriu and refused by requireWorkingCriu', async () => {
    const broken = join(scratch, 'broken-criu');
    writeFileSync(
      broken,
      '#!/bin/sh\n[ "$1" = --version ] && { echo "Version: 3.17.1"; exit 0; }\n' +
        'echo "Error (criu/vdso.c:381): vdso: Unexpected rt vDSO area bounds" >&2\nexit 1\n',
    );
    chmodSync(broken, 0o755);
    const info = await findCriu(broken);
    assert.equal(info.version, '3.17.1');
    assert.equal(info.check.ok, false);
    await assert.rejects(requireWorkingCriu(broken), (err: unknown) => {
      assert.ok(isAgentError(err, 'ECRIU'));
      assert.match(err.message, /3\.17\.1 .* fails `criu check`.*Unexpected rt vDSO area bounds/);
      assert.match(err.message, /npm run setup/);
      return true;
    });
  });
});

// Records as scripts/install-criu.sh writes them, about a real binary (a copy of /bin/true: its
// sha256 is what decides whether a record is about it) on this kernel or another.
describe('the self-test record', () => {
  const scratch = mkdtempSync(join(tmpdir(), 'agentd-criu-selftest-'));
  after(() => rmSync(scratch, { recursive: true, force: true }));
  const binary = join(scratch, 'criu');
  writeFileSync(binary, readFileSync('/bin/true'));
  chmodSync(binary, 0o755);
  const sha256 = createHash('sha256').update(readFileSync(binary)).digest('hex');
  const record = (fields: Record<string, unknown> = {}): string => {
    const path = join(scratch, `record-${Math.random().toString(36).slice(2)}.json`);
    const base = {
      path: binary,
      version: '4.2.1',
      sha256,
      kernel: release(),
      result: 'pass',
      reason: '',
      testedAt: '2026-12-01T07:58:56Z',
      durationMs: 316,
    };
    writeFileSync(path, JSON.stringify({ ...base, ...fields }, null, 2));
    return path;
  };

  test('a pass for this binary on this kernel: passed, with the record', () => {
    const path = record();
    const t = readSelfTest(binary, path);
    assert.equal(t.recordPath, path);
    assert.ok(t.status === 'passed', t.status);
    assert.equal(t.record.version, '4.2.1');
    assert.equal(t.record.durationMs, 316);
  });

  test('a failure: failed, with its reason', () => {
    const reason = "CRIU 4.1.1 fails the self-test: dump failed: sockets: Can't get 1:16 opt: Operation not supported";
    const t = readSelfTest(binary, record({ result: 'fail', reason, version: '4.1.1' }));
    assert.ok(t.status === 'failed', t.status);
    assert.equal(t.record.reason, reason);
  });

  test('another binary, the same path with other contents, or another kernel: stale, saying which', () => {
    assert.equal(readSelfTest('/bin/true', record()).status, 'stale');
    const changed = readSelfTest(binary, record({ sha256: '0'.repeat(64) }));
    assert.equal(changed.status, 'stale');
    assert.match(changed.why ?? '', /not this binary/);
    const kernel = readSelfTest(binary, record({ kernel: '6.1.0-28-amd64' }), '6.18.44');
    assert.equal(kernel.status, 'stale');
    assert.equal(kernel.why, 'tested on kernel 6.1.0-28-amd64, this is 6.18.44');
  });

  test('no record, or one that is not a record: not run', () => {
    assert.deepEqual(readSelfTest(binary, join(scratch, 'absent.json')), { status: 'not run', recordPath: join(scratch, 'absent.json') });
    const garbage = join(scratch, 'garbage.json');
    writeFileSync(garbage, '{"path": ');
    assert.equal(readSelfTest(binary, garbage).status, 'not run');
    assert.equal(readSelfTest(binary, record({ result: 'maybe' })).status, 'not run');
  });

  test('findCriu reports the record it is given, and reads the default one otherwise', async () => {
    const info = await findCriu(undefined, { selfTestRecord: join(scratch, 'absent.json') });
    assert.equal(info.selfTest.status, 'not run');
    assert.equal((await findCriu()).selfTest.recordPath, SELF_TEST_RECORD);
    assert.equal(SELF_TEST_RECORD, '/var/lib/agentd/criu-selftest.json');
  });
});
