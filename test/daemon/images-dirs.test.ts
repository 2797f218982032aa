// Image roots through the daemon's API: a checkpoint request may name as its `imagesDir` only the
// agent's own images directory or one it was started to allow (--allow-images-dir). Anything else,
// however it is spelled (`..`, a symlink, a symlink before `..`), is refused with 403 EACCES before
// anything is touched. A checkpoint in an allowed root is listed, shown, restored and deleted like
// one in the agent's own, and recovery at start cleans every root.

import { test, describe } from 'node:test';
import assert from 'node:assert/strict';
import { chmodSync, existsSync, mkdirSync, readdirSync, symlinkSync, unlinkSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { resolveCgroup } from '../../src/cgroup/index.js';
import { CgroupControl } from '../../src/lock/index.js';
import { anyHierarchy, pidAlive, waitUntil } from '../helpers/lab.js';
import { kernelState } from '../lock/helpers.js';
import { counterValue, countingTree, waitForCount } from '../checkpoint/helpers.js';
import { agentctl, api, startAgent, withAgent } from './agent.js';

let allowed!: string;
const { lab, agent } = withAgent('daemon-roots', (l) => {
  // Missing at start: the first checkpoint into it makes it (0700).
  allowed = join(l.tempDir('allowed'), 'images');
  return { args: ['--allow-images-dir', allowed] };
});
const h = anyHierarchy();
const PARTIAL = '.partial-20260101T000000Z-left';

describe('image roots', () => {
  test("GET /v1/host and agentctl host list the roots a request may name: the agent's own first", async () => {
    const host = await api(agent.socket, 'GET', '/v1/host');
    assert.equal(host.status, 200, host.text);
    assert.deepEqual(host.body.agent.allowedImagesDirs, [agent.imagesDir, allowed]);
    const printed = await agentctl(['--socket', agent.socket, 'host']);
    assert.equal(printed.code, 0, printed.stderr);
    assert.match(printed.stdout, new RegExp(`^\\s+also allowed: ${allowed}$`, 'm'));
  });

  test('a directory the agent does not allow, however spelled, is refused: 403 EACCES naming it and the option; nothing changes', async () => {
    const { cgroup, dir, pids } = await countingTree(lab, h, 'refused');
    const elsewhere = lab.tempDir('elsewhere');
    chmodSync(elsewhere, 0o755); // root-owned and not writable by others: only the allow list refuses it
    mkdirSync(join(elsewhere, 'inner'));
    const links = lab.tempDir('links');
    symlinkSync(elsewhere, join(links, 'to-elsewhere'));
    symlinkSync(allowed, join(links, 'to-allowed'));
    // <allowed>/link/.. reads as <allowed>, but the kernel resolves .. after the link: elsewhere.
    mkdirSync(allowed, { mode: 0o700 });
    symlinkSync(join(elsewhere, 'inner'), join(allowed, 'link'));
    const up = '/..'.repeat(allowed.split('/').length - 1);
    const notAllowed = [elsewhere, join(elsewhere, 'new'), `${allowed}${up}${elsewhere}`, join(links, 'to-elsewhere')];
    try {
      for (const imagesDir of notAllowed) {
        const res = await api(agent.socket, 'POST', '/v1/checkpoints', { body: { cgroup: cgroup.path, hierarchy: h, imagesDir } });
        assert.equal(res.status, 403, `${imagesDir}: ${res.text}`);
        assert.equal(res.body.error.code, 'EACCES');
        assert.ok(
          res.body.error.message.startsWith(
            `images directory ${imagesDir} is not one agentd may write to (allowed: ${agent.imagesDir}, ${allowed})`,
          ),
          res.body.error.message,
        );
        assert.match(res.body.error.message, /; start agentd with --allow-images-dir \/\S+ to allow it$/);
      }
      // A symlink to an allowed root: allowing the link would not help (a root may not be a symlink).
      const viaLink = await api(agent.socket, 'POST', '/v1/checkpoints', {
        body: { cgroup: cgroup.path, hierarchy: h, imagesDir: join(links, 'to-allowed') },
      });
      assert.equal(viaLink.status, 403, viaLink.text);
      assert.equal(
        viaLink.body.error.message,
        `images directory ${join(links, 'to-allowed')} leads to ${allowed} through a symlink; name ${allowed} itself`,
      );
      const sneaky = await api(agent.socket, 'POST', '/v1/checkpoints', {
        body: { cgroup: cgroup.path, hierarchy: h, imagesDir: `${allowed}/link/..` },
      });
      assert.equal(sneaky.status, 403, sneaky.text);
      assert.equal(sneaky.body.error.code, 'EACCES');
      assert.equal(
        sneaky.body.error.message,
        `images directory ${allowed}/link/.. is ${elsewhere}, not the allowed ${allowed}; name the directory itself, without symlinks before '..'`,
      );
      // Refused before a progress stream starts: a plain 403, not a 200 stream ending in an error.
      const streamed = await api(agent.socket, 'POST', '/v1/checkpoints', {
        body: { cgroup: cgroup.path, hierarchy: h, imagesDir: elsewhere },
        headers: { Accept: 'application/x-ndjson' },
      });
      assert.equal(streamed.status, 403, streamed.text);
      assert.equal(streamed.body.error.code, 'EACCES');
    } finally {
      unlinkSync(join(allowed, 'link'));
    }
    assert.equal(kernelState(cgroup), 'THAWED', 'never frozen');
    assert.deepEqual(
      lab.pidsOf(cgroup).sort((a, b) => a - b),
      pids,
    );
    await waitForCount(join(dir, 'child-1'), counterValue(join(dir, 'child-1')));
    const lockFile = new CgroupControl({ runDir: agent.runDir }).lockPath(resolveCgroup(cgroup.path, { hierarchy: h }));
    assert.equal(existsSync(lockFile), false, 'no lock was taken');
    assert.deepEqual(readdirSync(elsewhere), ['inner'], 'nothing was created there');
    assert.deepEqual(readdirSync(join(elsewhere, 'inner')), []);
    assert.deepEqual(readdirSync(allowed), [], 'nor in the allowed root');
    assert.deepEqual((await api(agent.socket, 'GET', '/v1/health')).body.operations, []);
    assert.match(agent.log(), /operation=checkpoint .*outcome=EACCES status=403/);
  });

  test("a checkpoint into an allowed directory: listed with its dir there beside the agent's own, shown, restored (counters go on), deleted", async () => {
    const { cgroup, dir, pids } = await countingTree(lab, h, 'allowed');
    const created = await api(agent.socket, 'POST', '/v1/checkpoints', {
      body: { cgroup: cgroup.path, hierarchy: h, after: 'killed', imagesDir: allowed },
    });
    assert.equal(created.status, 201, created.text);
    const { id } = created.body;
    assert.equal(created.body.dir, join(allowed, id));
    assert.ok(existsSync(join(allowed, id, 'manifest.json')));
    for (const pid of pids) await waitUntil(`pid ${pid} to be gone`, () => !pidAlive(pid));
    const frozenAt = counterValue(join(dir, 'child-1'));

    // One in the agent's own root too: the listing has both, each with its directory.
    const other = lab.cgroup(h, 'own-root');
    lab.spawnIn(other, 'sleep', ['100000']);
    await lab.waitForProcesses(other, 1);
    const own = await api(agent.socket, 'POST', '/v1/checkpoints', { body: { cgroup: other.path, hierarchy: h } });
    assert.equal(own.status, 201, own.text);
    const listed = await api(agent.socket, 'GET', '/v1/checkpoints');
    assert.equal(listed.status, 200, listed.text);
    const mine = listed.body.checkpoints
      .filter((c: { id: string }) => c.id === id || c.id === own.body.id)
      .map((c: { id: string; dir: string; status: string }) => [c.id, c.dir, c.status]);
    assert.deepEqual(
      mine.sort(),
      [
        [id, join(allowed, id), 'good'],
        [own.body.id, join(agent.imagesDir, own.body.id), 'good'],
      ].sort(),
    );

    const shown = await api(agent.socket, 'GET', `/v1/checkpoints/${id}`);
    assert.equal(shown.status, 200, shown.text);
    assert.equal(shown.body.id, id);
    assert.equal(shown.body.cgroup, cgroup.path);

    const restored = await api(agent.socket, 'POST', `/v1/checkpoints/${id}/restore`, { body: {} });
    assert.equal(restored.status, 200, restored.text);
    assert.deepEqual(
      [...restored.body.pids].sort((a, b) => a - b),
      pids,
    );
    assert.deepEqual(
      lab.pidsOf(cgroup).sort((a, b) => a - b),
      pids,
    );
    await waitForCount(join(dir, 'child-1'), frozenAt);

    for (const gone of [id, own.body.id]) {
      const deleted = await api(agent.socket, 'DELETE', `/v1/checkpoints/${gone}`);
      assert.equal(deleted.status, 200, deleted.text);
    }
    assert.equal(existsSync(join(allowed, id)), false);
    assert.equal(existsSync(join(agent.imagesDir, own.body.id)), false);
    const missing = await api(agent.socket, 'GET', `/v1/checkpoints/${id}`);
    assert.equal(missing.status, 404);
    assert.equal(missing.body.error.message, `no checkpoint ${id} in ${agent.imagesDir}, ${allowed}`);
  });

  test('recovery at start removes a leftover .partial-* in every root; a root others may write to is left alone, logged, and refused', async () => {
    const base = lab.tempDir('recovering');
    const ownRoot = join(base, 'images');
    const other = join(lab.tempDir('other'), 'images');
    const loose = lab.tempDir('loose');
    for (const root of [ownRoot, other]) mkdirSync(root, { mode: 0o700 });
    chmodSync(loose, 0o777);
    for (const root of [ownRoot, other, loose]) {
      mkdirSync(join(root, PARTIAL));
      writeFileSync(join(root, PARTIAL, 'pages-1.img'), 'half written\n');
    }
    const recovering = await startAgent(lab, { dir: base, args: ['--allow-images-dir', other, '--allow-images-dir', loose] });
    try {
      assert.deepEqual(readdirSync(ownRoot), [], "the agent's own root is cleaned");
      assert.deepEqual(readdirSync(other), [], 'an allowed root is cleaned as well');
      assert.deepEqual(readdirSync(loose), [PARTIAL], 'a root anyone may write to is not cleaned as root');
      for (const root of [ownRoot, other])
        assert.ok(
          recovering.log().includes(`removed a temporary image directory an interrupted checkpoint left dir=${join(root, PARTIAL)}`),
          recovering.log(),
        );
      assert.match(
        recovering.log(),
        new RegExp(`image directory not cleaned after a previous run: it fails its check dir=${loose} .*writable by group or others`),
      );
      // Nor is anything listed from it: the listing says what is wrong, and how to put it right.
      const listed = await api(recovering.socket, 'GET', '/v1/checkpoints');
      assert.equal(listed.status, 403, listed.text);
      assert.match(listed.body.error.message, new RegExp(`image directory ${loose} is writable by group or others .*chmod go-w ${loose}`));
    } finally {
      assert.equal(await recovering.stop(), 0);
    }
  });
});
