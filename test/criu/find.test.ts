import assert from 'node:assert/strict';
import { chmodSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, test } from 'node:test';
import { isAgentError } from '../../src/errors/index.js';
import { criuSearchPath, findCriu, requireWorkingCriu } from '../../src/criu/index.js';

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
