// Deleting a large image through the API: the agent goes on answering other requests while the
// files are removed (a recursive rmSync on its only thread used to make every request, and the
// systemd watchdog ping, wait until the last file was gone), and the checkpoint leaves the listing
// at once.
//
// The image is a fake: a manifest and ~290 MiB in 6000 files written directly, no CRIU involved.
// Only the removal is under test, and it depends on the number and size of files, not on what
// CRIU would have put in them.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, mkdirSync, readdirSync, writeFileSync } from 'node:fs';
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { api, withAgent } from './agent.js';

const { agent } = withAgent('daemon-delete');

const TREES = 6;
const FILES_PER_TREE = 1000;
const FILE_BYTES = 50 * 1024;

// Written with awaited writes: seconds of synchronous writing would keep this process from seeing
// the agent close the idle keep-alive connection of the health check before (5 s), and the next
// request, sent on that dead connection, would fail with EPIPE.
async function fakeImage(imagesDir: string, id: string): Promise<string> {
  const dir = join(imagesDir, id);
  const content = Buffer.alloc(FILE_BYTES, 0x5a);
  for (let t = 0; t < TREES; t++) {
    mkdirSync(join(dir, `tree-${t}`), { recursive: true, mode: 0o700 });
    for (let f = 0; f < FILES_PER_TREE; f++) await writeFile(join(dir, `tree-${t}`, `pages-${f}.img`), content);
  }
  const manifest = {
    formatVersion: 1,
    id,
    cgroup: 'fake/image',
    hierarchy: 'v2',
    createdAt: new Date().toISOString(),
    options: {},
    trees: [],
    files: [],
  };
  writeFileSync(join(dir, 'manifest.json'), JSON.stringify(manifest));
  return dir;
}

/** Whether the image is no longer whole under its own name: the delete has begun. */
function begun(dir: string): boolean {
  try {
    if (!existsSync(join(dir, 'manifest.json'))) return true;
    for (let t = 0; t < TREES; t++) if (readdirSync(join(dir, `tree-${t}`)).length < FILES_PER_TREE) return true;
    return false;
  } catch {
    return true;
  }
}

test('while a large image is deleted, /v1/health sent after the delete began is answered before the removal finishes', async (t) => {
  mkdirSync(agent.imagesDir, { recursive: true, mode: 0o700 });
  const id = '20261201T000000Z-fake01';
  const dir = await fakeImage(agent.imagesDir, id);
  assert.deepEqual(
    (await api(agent.socket, 'GET', '/v1/checkpoints')).body.checkpoints.map((c: { id: string }) => c.id),
    [id],
  );

  const sent = Date.now();
  const deleting = api(agent.socket, 'DELETE', `/v1/checkpoints/${id}`);
  while (!begun(dir)) await new Promise((resolve) => setImmediate(resolve));
  const asked = Date.now();
  const health = await api(agent.socket, 'GET', '/v1/health');
  const healthMs = Date.now() - asked;
  const leftWhenHealthy = readdirSync(agent.imagesDir);
  const listedMeanwhile = (await api(agent.socket, 'GET', '/v1/checkpoints')).body.checkpoints;
  assert.equal(health.status, 200);
  assert.notDeepEqual(leftWhenHealthy, [], 'the image was still being removed when /v1/health was answered');
  assert.deepEqual(listedMeanwhile, [], 'a checkpoint being deleted is not listed');

  const deleted = await deleting;
  const deleteMs = Date.now() - sent;
  assert.equal(deleted.status, 200, deleted.text);
  assert.deepEqual(deleted.body, { deleted: id });
  assert.deepEqual(readdirSync(agent.imagesDir), [], 'every file is gone once the delete is answered');
  t.diagnostic(
    `left in the images dir when /v1/health was answered (after ${healthMs} ms): ${leftWhenHealthy.join(', ')}; the delete took ${deleteMs} ms`,
  );
});
