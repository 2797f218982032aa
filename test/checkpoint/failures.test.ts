// Checkpoints that fail: each must leave the cgroup as it was, every process alive, the lock free,
// and no image that looks good.

import { test, describe, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { openFreezer } from '../../src/cgroup/index.js';
import { isAgentError } from '../../src/errors/index.js';
import { anyHierarchy, CGEXEC, FIXTURES, HIERARCHIES, Lab, pidAlive, unavailable, waitUntil, workload } from '../helpers/lab.js';
import { checkpointerIn, childNamed, counterValue, refOf, waitForCount, rejectsWith } from './helpers.js';
import type { Checkpointer } from '../../src/checkpoint/index.js';

const lab = new Lab('ckpt-fail');
const mounts: string[] = [];
after(async () => {
  for (const dir of mounts) execFileSync('umount', [dir]);
  await lab.cleanup();
});

function tmpfs(sizeMiB: number): string {
  const dir = lab.tempDir('tmpfs');
  execFileSync('mount', ['-t', 'tmpfs', '-o', `size=${sizeMiB}m,mode=0700`, 'agentd-test', dir]);
  mounts.push(dir);
  return dir;
}

async function counterIn(hierarchy: (typeof HIERARCHIES)[number], name: string) {
  const cgroup = lab.cgroup(hierarchy, name);
  const dir = lab.tempDir(name);
  lab.spawnIn(cgroup, workload('counter-tree.pl'), [dir, '1']);
  const pids = await lab.waitForProcesses(cgroup, 2);
  const file = join(dir, 'child-1');
  await waitForCount(file);
  return { cgroup, pids, file };
}

/** The failure left things as they were: prior state, all processes alive and running, lock free, no good image. */
async function assertUnharmed(checkpointer: Checkpointer, w: Awaited<ReturnType<typeof counterIn>>, prior: 'THAWED' | 'FROZEN') {
  const ref = refOf(w.cgroup);
  const status = checkpointer.control.status(ref);
  assert.equal(status.state, prior, 'the cgroup is back in its prior state');
  assert.equal(status.locked, false, 'the lock is free');
  for (const pid of w.pids) assert.ok(pidAlive(pid), `pid ${pid} is alive`);
  assert.deepEqual(lab.pidsOf(w.cgroup).sort(), [...w.pids].sort(), 'no process lost or added');
  assert.deepEqual(
    checkpointer.list().filter((c) => c.status === 'good'),
    [],
    'no image is presented as good',
  );
  if (prior === 'THAWED') await waitForCount(w.file, counterValue(w.file));
}

for (const hierarchy of HIERARCHIES) {
  describe(`failed checkpoints, cgroup ${hierarchy}`, { skip: unavailable(hierarchy) }, () => {
    test('a tiny full tmpfs: refused by the preflight (ENOSPC) before anything is touched', async () => {
      const w = await counterIn(hierarchy, 'tiny');
      const tiny = tmpfs(1);
      const checkpointer = checkpointerIn(lab, undefined, [tiny]);
      await assert.rejects(
        checkpointer.checkpoint(refOf(w.cgroup), { imagesDir: tiny }),
        rejectsWith('ENOSPC', /not enough space.*MiB free/),
      );
      await assertUnharmed(checkpointer, w, 'THAWED');
    });

    test('the disk fills up while CRIU writes: ENOSPC, cgroup back to FROZEN when it was frozen', async () => {
      const w = await counterIn(hierarchy, 'fills');
      const images = tmpfs(64);
      const checkpointer = checkpointerIn(lab, undefined, [images]);
      const freezer = openFreezer(refOf(w.cgroup));
      await freezer.freeze();
      const fill = () => {
        try {
          writeFileSync(join(images, 'ballast'), Buffer.alloc(63 << 20));
        } catch {
          // ENOSPC: full is what we want
        }
      };
      await assert.rejects(
        checkpointer.checkpoint(refOf(w.cgroup), { imagesDir: images }, { onProgress: (e) => e.stage === 'lock' && fill() }),
        rejectsWith('ENOSPC', /No space left on device|ENOSPC/),
      );
      assert.equal(freezer.state(), 'FROZEN');
      await freezer.thaw();
      freezer.close();
      await assertUnharmed(checkpointer, w, 'THAWED');
    });

    test('CRIU missing: ECRIU naming what to install, nothing touched', async () => {
      const w = await counterIn(hierarchy, 'no-criu');
      const checkpointer = checkpointerIn(lab, '/nonexistent/criu');
      await assert.rejects(checkpointer.checkpoint(refOf(w.cgroup)), rejectsWith('ECRIU', /\/nonexistent\/criu.*npm run setup/));
      await assertUnharmed(checkpointer, w, 'THAWED');
    });

    test('CRIU killed mid-dump: the error says so, the cgroup runs again, the image is kept only as failed', async () => {
      const w = await counterIn(hierarchy, 'criu-killed');
      const checkpointer = checkpointerIn(lab);
      let killed: number | undefined;
      const killCriu = async () => {
        await waitUntil('criu to start', () => childNamed('criu') !== undefined, 5000);
        killed = childNamed('criu')!;
        process.kill(killed, 'SIGKILL');
      };
      let killing: Promise<void> | undefined;
      await assert.rejects(
        checkpointer.checkpoint(
          refOf(w.cgroup),
          {},
          {
            onProgress: (e) => {
              if (e.stage === 'dump' && !killing) killing = killCriu();
            },
          },
        ),
        rejectsWith('ECRIU', /criu dump of pid \d+ .*(SIGKILL|signal)/),
      );
      await killing;
      assert.ok(killed, 'CRIU was found and killed');
      await assertUnharmed(checkpointer, w, 'THAWED');
      assert.deepEqual(
        checkpointer.list().map((c) => c.status),
        ['failed'],
        'kept for diagnosis under a failed name',
      );
    });

    test("the cgroup thawed behind agentd's back during CHECKPOINTING: EINCONSISTENT, no good image", async () => {
      const w = await counterIn(hierarchy, 'breach');
      const checkpointer = checkpointerIn(lab);
      const file = hierarchy === 'v1' ? 'freezer.state' : 'cgroup.freeze';
      const thawBehindItsBack = () => {
        writeFileSync(join(w.cgroup.dir, file), hierarchy === 'v1' ? 'THAWED' : '0');
        execFileSync('sleep', ['0.05']);
      };
      await assert.rejects(
        checkpointer.checkpoint(refOf(w.cgroup), {}, { onProgress: (e) => e.stage === 'dump' && e.bytes === 0 && thawBehindItsBack() }),
        rejectsWith('EINCONSISTENT', /the cgroup did not stay FROZEN/),
      );
      await assertUnharmed(checkpointer, w, 'THAWED');
    });

    test("thawed behind agentd's back, and CRIU then fails on its own: EINCONSISTENT quoting CRIU, not a bare ECRIU", async () => {
      // A CRIU that fails on demand (fixtures/faults/fake-criu.sh, FAKE_CRIU_DUMP=fail): the real
      // one fails this way only now and then, when seizing the thawed tasks times out under load.
      const fake = join(FIXTURES, 'faults', 'fake-criu.sh');
      const w = await counterIn(hierarchy, 'breach-fail');
      const checkpointer = checkpointerIn(lab, fake);
      const file = hierarchy === 'v1' ? 'freezer.state' : 'cgroup.freeze';
      const thaw = () => writeFileSync(join(w.cgroup.dir, file), hierarchy === 'v1' ? 'THAWED' : '0');
      await assert.rejects(
        checkpointer.checkpoint(refOf(w.cgroup), {}, { onProgress: (e) => e.stage === 'dump' && e.bytes === 0 && thaw() }),
        rejectsWith('EINCONSISTENT', /the cgroup did not stay FROZEN .*and CRIU then failed: .*injected failure/),
      );
      await assertUnharmed(checkpointer, w, 'THAWED');
      // The same failure with the cgroup left alone stays CRIU's own.
      await assert.rejects(checkpointer.checkpoint(refOf(w.cgroup)), rejectsWith('ECRIU', /injected failure/));
      await assertUnharmed(checkpointer, w, 'THAWED');
    });

    test('a second checkpoint while one runs gets EBUSY naming the holder, and changes nothing', async () => {
      const w = await counterIn(hierarchy, 'busy');
      const checkpointer = checkpointerIn(lab);
      let second: unknown;
      const first = checkpointer.checkpoint(
        refOf(w.cgroup),
        { requestId: 'first-one' },
        {
          onProgress: (e) => {
            if (e.stage !== 'lock' || second) return;
            second = checkpointer.checkpoint(refOf(w.cgroup), { requestId: 'second' }).catch((err: unknown) => err);
          },
        },
      );
      const summary = await first;
      const err = await second;
      assert.ok(isAgentError(err, 'EBUSY'), String(err));
      assert.match(err.message, /CHECKPOINTING \(request first-one/);
      assert.equal(checkpointer.list().length, 1);
      assert.equal(summary.finalState, 'THAWED');
    });
  });
}

test('a job on a pseudo-terminal: --shell-job dumps it, and it prints on the new terminal after restore', async () => {
  const { spawn } = await import('node-pty');
  const cgroup = lab.cgroup(anyHierarchy(), 'pty');
  const file = join(lab.tempDir('pty'), 'count');
  // node-pty makes the job a session leader with the pty as its controlling terminal, as a login shell's job is.
  const original = spawn(CGEXEC, [join(cgroup.dir, 'cgroup.procs'), 'perl', join(FIXTURES, 'criu', 'counter.pl'), file], {
    cols: 80,
    rows: 24,
  });
  lab.track(original.pid);
  let printed = '';
  original.onData((d) => (printed += d));
  await waitUntil('the job to print on its terminal', () => /tick \d+/.test(printed));
  const [pid] = await lab.waitForProcesses(cgroup, 1);
  const checkpointer = checkpointerIn(lab);
  await assert.rejects(checkpointer.checkpoint(refOf(cgroup), { after: 'killed' }), rejectsWith('ECRIU', /--shell-job|peer/));
  const summary = await checkpointer.checkpoint(refOf(cgroup), { after: 'killed', shellJob: true });
  assert.equal(pidAlive(pid), false);
  const frozenAt = counterValue(file);
  original.kill();

  let onNewTerminal = '';
  const restored = await checkpointer.restore(summary.id, {}, { onTerminal: (t) => t.onData((d) => (onNewTerminal += d)) });
  assert.deepEqual(restored.pids, [pid]);
  await waitUntil('the restored job to print on the new terminal', () => /tick (\d+)/.test(onNewTerminal));
  const tick = Number(/tick (\d+)/.exec(onNewTerminal)![1]);
  assert.ok(tick > frozenAt, `the job went on counting from ${frozenAt} (printed tick ${tick})`);
  process.kill(pid, 'SIGKILL');
  await waitUntil('the restored job to exit', () => !pidAlive(pid));
});
