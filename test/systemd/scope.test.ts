// The transient scope a dump's CRIU runs in under agentd.service (src/systemd/scope.ts): the command
// it builds, and that there is none where systemd is not PID 1. That systemd really keeps CRIU out of
// reach of a kill of agentd.service is test/systemd/checkpoint-kill.test.ts, in the guests.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { CRIU_SCOPE_PREFIX, criuScopeWrap, inTransientScope } from '../../src/systemd/index.js';

test('inTransientScope: systemd-run --scope, a unit of its own, collected, then the command after --', () => {
  const argv = ['/usr/sbin/criu', 'dump', '-t', '42', '-D', '/images/x'];
  const out = inTransientScope(argv, 'agentd: criu dump');
  assert.deepEqual(out.slice(0, 4), ['systemd-run', '--scope', '--quiet', '--collect']);
  assert.match(out[4], new RegExp(`^--unit=${CRIU_SCOPE_PREFIX}[0-9a-f]{8}\\.scope$`));
  assert.equal(out[5], '--description=agentd: criu dump');
  assert.deepEqual(out.slice(out.indexOf('--') + 1), argv, 'the command follows unchanged');
  assert.notEqual(inTransientScope(argv, 'd')[4], inTransientScope(argv, 'd')[4], 'each run gets a scope of its own');
});

test('criuScopeWrap: none without systemd as PID 1; with it, the scope with a description naming the operation', () => {
  const dir = mkdtempSync(join(tmpdir(), 'agentd-scope-'));
  try {
    assert.equal(criuScopeWrap(join(dir, 'missing')), undefined);
    const wrap = criuScopeWrap(dir);
    assert.ok(wrap);
    const out = wrap(['/usr/sbin/criu', 'dump', '-t', '42', '-D', '/images/x']);
    assert.equal(out[0], 'systemd-run');
    assert.equal(out[5], '--description=agentd: /usr/sbin/criu dump -t 42');
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
