// Checkpoint and restore of whole cgroups with the real CRIU, on real v1 and v2 cgroups.

import { test, describe, after } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, readFileSync, readdirSync } from 'node:fs';
import { connect } from 'node:net';
import { join } from 'node:path';
import { openFreezer } from '../../src/cgroup/index.js';
import { isAgentError } from '../../src/errors/index.js';
import type { Checkpointer, Manifest } from '../../src/checkpoint/index.js';
import { knowsSkip } from '../../src/criu/index.js';
import { anyHierarchy, HIERARCHIES, Lab, pidAlive, unavailable, waitUntil, workload } from '../helpers/lab.js';
import { checkpointerIn, counterValue, refOf, waitForCount } from './helpers.js';
import { chunkedSha256 } from '../helpers/digest.js';

const lab = new Lab('checkpoint');

/** The network lock of a dump with nothing to lock: `skip`, or the agent's lock where CRIU does not know the word. */
async function skipOrLock(checkpointer: Checkpointer): Promise<string | undefined> {
  const criu = await checkpointer.findCriu();
  return knowsSkip(criu.version) ? 'skip' : (criu.networkLock ?? undefined);
}

after(() => lab.cleanup());

/** Connects to 127.0.0.1:port and returns the one line the listener answers. */
function hello(port: number): Promise<string> {
  return new Promise((resolve, reject) => {
    let text = '';
    const socket = connect({ host: '127.0.0.1', port }, () => undefined);
    socket.setEncoding('utf8');
    socket.setTimeout(10_000, () => socket.destroy(new Error(`no answer on port ${port} within 10 s`)));
    socket.on('data', (chunk: string) => (text += chunk));
    socket.on('end', () => resolve(text.trim()));
    socket.on('error', reject);
  });
}

for (const hierarchy of HIERARCHIES) {
  describe(`checkpoint and restore, cgroup ${hierarchy}`, { skip: unavailable(hierarchy) }, () => {
    test('a counting process tree is dumped, killed, restored with the same pids, and counts on from where it stopped', async () => {
      const cgroup = lab.cgroup(hierarchy, 'tree');
      const dir = lab.tempDir('counts');
      lab.spawnIn(cgroup, workload('counter-tree.pl'), [dir, '2']);
      const pids = (await lab.waitForProcesses(cgroup, 3)).sort((a, b) => a - b);
      for (const name of ['root', 'child-1', 'child-2']) await waitForCount(join(dir, name), 3);
      const checkpointer = checkpointerIn(lab);
      const stages: string[] = [];
      const summary = await checkpointer.checkpoint(refOf(cgroup), { after: 'killed' }, { onProgress: (e) => stages.push(e.stage) });

      assert.equal(summary.trees, 1);
      assert.equal(summary.processes, 3);
      assert.equal(summary.finalState, 'EMPTY');
      for (const pid of pids) assert.equal(pidAlive(pid), false, `pid ${pid} was killed by --after killed`);
      // killed keeps the image durable before the kill: manifest before policy (the policies that
      // thaw put the policy first, test/checkpoint/after-thaw.test.ts).
      assert.deepEqual([...new Set(stages)], ['preflight', 'freeze', 'lock', 'dump', 'verify', 'manifest', 'policy', 'release', 'done']);
      const frozenAt = Object.fromEntries(['root', 'child-1', 'child-2'].map((n) => [n, counterValue(join(dir, n))]));

      const manifest = checkpointer.show(summary.id);
      assert.equal(manifest.cgroup, cgroup.path);
      assert.equal(manifest.hierarchy, hierarchy);
      assert.equal(manifest.priorState, 'THAWED');
      assert.deepEqual(
        manifest.trees[0].processes.map((p) => p.pid).sort((a, b) => a - b),
        pids,
      );
      assert.ok(manifest.files.some((f) => f.path === 'tree-0/pstree.img' && /^[0-9a-f]{64}$/.test(f.sha256)));
      assert.ok(manifest.criuStats[0].frozenTime > 0);
      // No socket in the tree: nothing for CRIU to lock (src/criu/network-lock.ts), where CRIU
      // knows `skip` (not Debian 12's 3.17.1, in the guests: the agent's lock there).
      assert.equal(manifest.trees[0].networkLock, await skipOrLock(checkpointer));
      assert.deepEqual(
        checkpointer.list().map((c) => [c.id, c.status]),
        [[summary.id, 'good']],
      );

      const restored = await checkpointer.restore(summary.id);
      assert.deepEqual(
        [...restored.pids].sort((a, b) => a - b),
        pids,
        'CRIU restores the same pids',
      );
      assert.deepEqual(
        openFreezer(refOf(cgroup))
          .processes()
          .sort((a, b) => a - b),
        pids,
        'back in the same cgroup',
      );
      for (const name of ['root', 'child-1', 'child-2']) {
        const file = join(dir, name);
        await waitForCount(file, frozenAt[name]);
        assert.ok(counterValue(file) < frozenAt[name] + 1000, `${name} resumed from ${frozenAt[name]}, not from zero`);
      }
    });

    test('a process listening on a loopback TCP port is checkpointed and restored, and answers on its port again', async () => {
      // CRIU 4.1.1 could not dump this on Linux >= 6.16 ("Can't get 1:16 opt", docs/criu-selection.md).
      const cgroup = lab.cgroup(hierarchy, 'tcp');
      const portFile = join(lab.tempDir('tcp'), 'port');
      lab.spawnIn(cgroup, workload('tcp-listener.pl'), [portFile]);
      const [pid] = await lab.waitForProcesses(cgroup, 1);
      await waitUntil('the listener to write its port', () => existsSync(portFile));
      const port = Number(readFileSync(portFile, 'utf8'));
      assert.equal(await hello(port), `hello 1 ${pid}`);

      const checkpointer = checkpointerIn(lab);
      const summary = await checkpointer.checkpoint(refOf(cgroup), { after: 'killed' });
      assert.equal(summary.processes, 1);
      // A listening socket has no peer: CRIU locks none, so the dump is given no lock to set up.
      assert.equal(checkpointer.show(summary.id).trees[0].networkLock, await skipOrLock(checkpointer));
      assert.equal(pidAlive(pid), false);
      await assert.rejects(hello(port), /ECONNREFUSED/, 'nothing listens on the port between dump and restore');

      const restored = await checkpointer.restore(summary.id);
      assert.deepEqual([...restored.pids], [pid]);
      assert.equal(await hello(port), `hello 2 ${pid}`, 'the same process, counting on from its memory, on the same port');
    });

    test('--after policies: prior keeps a running cgroup running and a frozen one frozen; thawed; frozen', async () => {
      const cgroup = lab.cgroup(hierarchy, 'policy');
      const dir = lab.tempDir('policy');
      lab.spawnIn(cgroup, workload('counter-tree.pl'), [dir, '0']);
      await lab.waitForProcesses(cgroup, 1);
      await waitForCount(join(dir, 'root'));
      const checkpointer = checkpointerIn(lab);
      const freezer = openFreezer(refOf(cgroup));
      try {
        const prior = await checkpointer.checkpoint(refOf(cgroup));
        assert.equal(prior.finalState, 'THAWED');
        assert.equal(freezer.state(), 'THAWED');
        await waitForCount(join(dir, 'root'), counterValue(join(dir, 'root')));

        await freezer.freeze();
        const priorFrozen = await checkpointer.checkpoint(refOf(cgroup), { after: 'prior' });
        assert.equal(priorFrozen.finalState, 'FROZEN');
        assert.equal(freezer.state(), 'FROZEN');

        const thawed = await checkpointer.checkpoint(refOf(cgroup), { after: 'thawed' });
        assert.equal(thawed.finalState, 'THAWED');
        assert.equal(freezer.state(), 'THAWED');

        const frozen = await checkpointer.checkpoint(refOf(cgroup), { after: 'frozen' });
        assert.equal(frozen.finalState, 'FROZEN');
        assert.equal(freezer.state(), 'FROZEN');
        assert.equal(checkpointer.list().filter((c) => c.status === 'good').length, 4);
        await freezer.thaw();
      } finally {
        freezer.close();
      }
    });

    test('a cgroup with two separate process trees loses nothing: one dump per tree, restored in order', async () => {
      const cgroup = lab.cgroup(hierarchy, 'two-trees');
      const dirA = lab.tempDir('tree-a');
      const dirB = lab.tempDir('tree-b');
      lab.spawnIn(cgroup, workload('counter-tree.pl'), [dirA, '1']);
      lab.spawnIn(cgroup, workload('counter-tree.pl'), [dirB, '2']);
      const pids = (await lab.waitForProcesses(cgroup, 5)).sort((a, b) => a - b);
      await waitForCount(join(dirB, 'child-2'));
      const checkpointer = checkpointerIn(lab);
      const summary = await checkpointer.checkpoint(refOf(cgroup), { after: 'killed' });
      assert.equal(summary.trees, 2);
      assert.equal(summary.processes, 5);
      const manifest = checkpointer.show(summary.id);
      assert.deepEqual(
        manifest.trees.flatMap((t) => t.processes.map((p) => p.pid)).sort((a, b) => a - b),
        pids,
      );
      const frozenB = counterValue(join(dirB, 'child-2'));

      const restored = await checkpointer.restore(summary.id);
      assert.deepEqual(
        [...restored.pids].sort((a, b) => a - b),
        pids,
      );
      await waitForCount(join(dirB, 'child-2'), frozenB);
      await waitForCount(join(dirA, 'child-1'), counterValue(join(dirA, 'child-1')));
    });

    test('64 MiB of patterned memory survives dump and restore byte for byte', async () => {
      const cgroup = lab.cgroup(hierarchy, 'memory');
      const result = join(lab.tempDir('memory'), 'result');
      lab.spawnIn(cgroup, workload('memory-pattern.pl'), ['64', result]);
      await waitUntil('the pattern to be written', () => readFileSync(result, 'utf8').trim() === 'ready', 30_000);
      const [pid] = await lab.waitForProcesses(cgroup, 1);
      const checkpointer = checkpointerIn(lab);
      const summary = await checkpointer.checkpoint(refOf(cgroup), { after: 'killed' });
      assert.ok(summary.bytes > 64 << 20, `image holds the 64 MiB (${summary.bytes} bytes)`);
      // The page file is over 16 MiB: its digest is chunked (src/checkpoint/digest.ts), computed
      // partly while CRIU wrote it; here it is computed again from the file, by the definition.
      const manifest = JSON.parse(readFileSync(join(summary.dir, 'manifest.json'), 'utf8')) as Manifest;
      const pages = manifest.files.filter((f) => /^tree-0\/pages-\d+\.img$/.test(f.path) && f.size > 16 << 20);
      assert.equal(pages.length, 1, 'one large page file');
      assert.equal(pages[0].chunkBytes, 16 << 20);
      assert.equal(pages[0].sha256, chunkedSha256(readFileSync(join(summary.dir, pages[0].path)), 16 << 20));
      assert.equal(typeof summary.timings.hashedDuringDumpBytes, 'number');
      await checkpointer.restore(summary.id);
      process.kill(pid, 'SIGUSR1');
      await waitUntil('the pattern check', () => readFileSync(result, 'utf8').trim() !== 'ready', 30_000);
      assert.equal(readFileSync(result, 'utf8').trim(), 'ok 64');
    });

    test('restore into another cgroup', async () => {
      const source = lab.cgroup(hierarchy, 'move-from');
      const target = lab.cgroup(hierarchy, 'move-to');
      const dir = lab.tempDir('move');
      lab.spawnIn(source, workload('counter-tree.pl'), [dir, '0']);
      const [pid] = await lab.waitForProcesses(source, 1);
      await waitForCount(join(dir, 'root'));
      const checkpointer = checkpointerIn(lab);
      const summary = await checkpointer.checkpoint(refOf(source), { after: 'killed' });
      const restored = await checkpointer.restore(summary.id, { cgroup: target.path });
      assert.equal(restored.cgroup, target.path);
      assert.deepEqual(lab.pidsOf(target), [pid]);
      assert.deepEqual(lab.pidsOf(source), []);
      await waitForCount(join(dir, 'root'), counterValue(join(dir, 'root')));
    });

    test('a corrupted image is refused before anything is restored', async () => {
      const cgroup = lab.cgroup(hierarchy, 'corrupt');
      const dir = lab.tempDir('corrupt');
      lab.spawnIn(cgroup, workload('counter-tree.pl'), [dir, '0']);
      const [pid] = await lab.waitForProcesses(cgroup, 1);
      await waitForCount(join(dir, 'root'));
      const checkpointer = checkpointerIn(lab);
      const summary = await checkpointer.checkpoint(refOf(cgroup), { after: 'killed' });
      const pages = readdirSync(join(summary.dir, 'tree-0')).find((f) => f.startsWith('pages-'))!;
      const { openSync, writeSync, closeSync } = await import('node:fs');
      const fd = openSync(join(summary.dir, 'tree-0', pages), 'r+');
      writeSync(fd, Buffer.from('corrupt!'), 0, 8, 100);
      closeSync(fd);
      await assert.rejects(checkpointer.restore(summary.id), (err: unknown) => {
        assert.ok(isAgentError(err, 'EIO'));
        assert.match(err.message, new RegExp(`tree-0/${pages}.*corrupt`));
        return true;
      });
      assert.equal(pidAlive(pid), false, 'nothing was restored');
      assert.deepEqual(lab.pidsOf(cgroup), []);
    });
  });
}

test('the listing, show and delete', async () => {
  const checkpointer = checkpointerIn(lab);
  assert.deepEqual(checkpointer.list(), []);
  assert.throws(
    () => checkpointer.show('no-such-id'),
    (err: unknown) => isAgentError(err, 'ENOENT'),
  );
  assert.throws(
    () => checkpointer.show('../etc'),
    (err: unknown) => isAgentError(err, 'EINVAL'),
  );
  await assert.rejects(checkpointer.delete('no-such-id'), (err: unknown) => isAgentError(err, 'ENOENT'));
  const cgroup = lab.cgroup(anyHierarchy(), 'listing');
  const dir = lab.tempDir('listing');
  lab.spawnIn(cgroup, workload('counter-tree.pl'), [dir, '0']);
  await lab.waitForProcesses(cgroup, 1);
  const summary = await checkpointer.checkpoint(refOf(cgroup));
  assert.equal(checkpointer.list().length, 1);
  const deleting = checkpointer.delete(summary.id);
  assert.deepEqual(checkpointer.list(), [], 'gone from the listing at once');
  await deleting;
  assert.equal(existsSync(summary.dir), false);
  assert.deepEqual(checkpointer.list(), []);
});
