// The Checkpointer is the one owner of the CRIU probe: the daemon's start log and GET /v1/host ask
// it, so what they show is what a checkpoint would run. It keeps a CRIU that passes `criu check` and
// looks again while none does. A stand-in criu (a shell script) plays a CRIU whose check fails and
// then passes: a real CRIU cannot be made to fail its check on demand.

import assert from 'node:assert/strict';
import { chmodSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, test } from 'node:test';
import { isAgentError } from '../../src/errors/index.js';
import { Lab } from '../helpers/lab.js';
import { checkpointerIn } from './helpers.js';

const lab = new Lab('criu-owner');
after(() => lab.cleanup());

/** A criu that prints a version and passes `criu check` only while `passes` exists beside it. */
function standInCriu(): { path: string; passes: string } {
  const dir = lab.tempDir('stand-in-criu');
  const path = join(dir, 'criu');
  const passes = join(dir, 'passes');
  writeFileSync(
    path,
    `#!/bin/sh
case "$1" in
  --version) echo "Version: 4.1.1" ;;
  check) if [ -e '${passes}' ]; then echo "Looks good."; else echo "Error (cr-check.c:1): stand-in check fails" >&2; exit 1; fi ;;
esac
`,
  );
  chmodSync(path, 0o755);
  return { path, passes };
}

test('a CRIU failing its check is reported, refused for checkpoints, and looked at again', async () => {
  const criu = standInCriu();
  const checkpointer = checkpointerIn(lab, criu.path);
  const failing = await checkpointer.findCriu();
  assert.equal(failing.check.ok, false);
  assert.match(failing.check.output, /stand-in check fails/);
  await assert.rejects(checkpointer.criu(), (err: unknown) => isAgentError(err, 'ECRIU') && /fails `criu check`/.test(err.message));
  writeFileSync(criu.passes, '');
  const passing = await checkpointer.findCriu();
  assert.equal(passing.check.ok, true, 'the failed check was not kept: the next caller looked again');
  assert.deepEqual(await checkpointer.criu(), passing);
});

test('a CRIU passing its check is kept: the host facts and a checkpoint see the same one', async () => {
  const criu = standInCriu();
  writeFileSync(criu.passes, '');
  const checkpointer = checkpointerIn(lab, criu.path);
  const first = await checkpointer.findCriu();
  assert.equal(first.check.ok, true);
  rmSync(criu.passes);
  assert.equal(await checkpointer.findCriu(), first, 'the same answer, not a second probe');
  assert.equal(await checkpointer.criu(), first);
});

test('no runnable criu is ECRIU, and is not kept either', async () => {
  const missing = join(lab.tempDir('no-criu'), 'criu');
  const checkpointer = checkpointerIn(lab, missing);
  await assert.rejects(checkpointer.findCriu(), (err: unknown) => isAgentError(err, 'ECRIU'));
  const criu = standInCriu();
  writeFileSync(missing, `#!/bin/sh\nexec '${criu.path}' "$@"\n`);
  chmodSync(missing, 0o755);
  writeFileSync(criu.passes, '');
  assert.equal((await checkpointer.findCriu()).check.ok, true);
});
