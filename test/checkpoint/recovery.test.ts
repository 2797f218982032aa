// Recovery at start (Checkpointer.recover) of what a previous run left: lock files of holders that
// died mid-operation are found and acted on, and then removed like any released lock file, also
// when their cgroup is gone; lock files nothing needs are swept; the files of a delete cut short
// are removed.

import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, mkdirSync, readdirSync, rmdirSync, symlinkSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import type { ChildProcess } from 'node:child_process';
import { anyHierarchy, Lab, type TestCgroup } from '../helpers/lab.js';
import { CONTENDER, kernelState } from '../lock/helpers.js';
import { checkpointerIn, refOf } from './helpers.js';
import type { Checkpointer } from '../../src/checkpoint/index.js';

const lab = new Lab('recovery');
after(() => lab.cleanup());

/** A separate agent process takes CHECKPOINTING of the (frozen) cgroup and is SIGKILLed holding it. */
async function dieHolding(checkpointer: Checkpointer, cgroup: TestCgroup, requestId: string): Promise<void> {
  const holder: ChildProcess = lab.spawn(
    process.execPath,
    [CONTENDER, checkpointer.control.runDir, cgroup.hierarchy, cgroup.path, requestId, 'hold'],
    {
      stdio: ['ignore', 'pipe', 'inherit'],
    },
  );
  const line = await new Promise<string>((resolve) => {
    let out = '';
    holder.stdout!.on('data', (d: Buffer) => {
      out += d.toString();
      if (out.includes('\n')) resolve(out.split('\n')[0]);
    });
  });
  assert.equal(JSON.parse(line).outcome, 'won', line);
  const gone = new Promise((resolve) => holder.once('exit', resolve));
  holder.kill('SIGKILL');
  await gone;
}

test("a dead holder's lock file is recovered, then removed, also when its cgroup is gone; lock files nothing needs are swept", async () => {
  const hierarchy = anyHierarchy();
  const kept = lab.cgroup(hierarchy, 'kept');
  const vanished = lab.cgroup(hierarchy, 'vanished');
  const checkpointer = checkpointerIn(lab);
  const { control } = checkpointer;
  for (const cgroup of [kept, vanished]) {
    await control.freeze(refOf(cgroup));
    await dieHolding(checkpointer, cgroup, `dead-${cgroup.path.split('/').at(-1)}`);
  }
  rmdirSync(vanished.dir);
  // What an agentd that did not remove lock files on release left: a finished record. (Written
  // directly: the current code never leaves one.)
  mkdirSync(control.locksDir, { recursive: true, mode: 0o700 });
  const old = join(control.locksDir, `${hierarchy}-old%2Fjob.lock`);
  const finished = {
    pid: 1,
    requestId: 'old',
    operation: 'freeze',
    phase: 'finished',
    cgroup: 'old/job',
    hierarchy,
    since: new Date().toISOString(),
  };
  writeFileSync(old, JSON.stringify(finished) + '\n', { mode: 0o600 });
  assert.equal(readdirSync(control.locksDir).length, 3);

  const report = await checkpointer.recover();
  const byCgroup = Object.fromEntries(report.cgroups.map((c) => [c.cgroup, c]));
  assert.match(byCgroup[kept.path]?.found ?? '', /an interrupted checkpoint .*request dead-kept, phase checkpointing/);
  assert.equal(kernelState(kept), 'FROZEN', 'left FROZEN, as the kernel had it');
  assert.match(byCgroup[vanished.path]?.action ?? '', /no longer exists.*lock file is removed/);
  assert.deepEqual(report.removedLockFiles, [old]);
  assert.deepEqual(readdirSync(control.locksDir), [], 'no lock file left');

  const again = await checkpointer.recover();
  assert.deepEqual([again.cgroups, again.removedLockFiles], [[], []], 'nothing is found twice');
  await control.thaw(refOf(kept));
});

test('the files of a delete cut short (a .deleting-* directory) are removed at the next start; checkpoints beside it are kept', async () => {
  const checkpointer = checkpointerIn(lab);
  const [root] = checkpointer.imageRoots;
  mkdirSync(root, { recursive: true, mode: 0o700 });
  // What an agent stopped mid-delete leaves: the image renamed away, some of its files still there.
  // (Made directly: stopping an agent between two unlinks is not something a test can aim at.)
  const cut = join(root, '.deleting-20261201T000000Z-cut001-a1b2c3');
  mkdirSync(join(cut, 'tree-0'), { recursive: true });
  writeFileSync(join(cut, 'tree-0', 'pages-1.img'), Buffer.alloc(4096));
  symlinkSync('/etc/passwd', join(cut, 'tree-0', 'planted'));
  mkdirSync(join(root, '20261201T000000Z-kept01'));
  const report = await checkpointer.recover();
  assert.deepEqual(report.finishedDeletes, [cut]);
  assert.deepEqual(readdirSync(root), ['20261201T000000Z-kept01']);
  assert.ok(existsSync('/etc/passwd'), 'a symlink inside is removed, not followed');
});
