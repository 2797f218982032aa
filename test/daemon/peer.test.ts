// The peer credentials agentd logs for each connection rest on Node's private `socket._handle.fd`
// (src/daemon/peer.ts): these tests say so at once if a Node release takes it away.

import assert from 'node:assert/strict';
import { once } from 'node:events';
import { mkdtempSync, rmSync } from 'node:fs';
import { createConnection, createServer, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, test } from 'node:test';
import { peerOf, recordPeer, socketFd } from '../../src/daemon/peer.js';

const dir = mkdtempSync(join(tmpdir(), 'agentd-peer-'));
after(() => rmSync(dir, { recursive: true, force: true }));

/** A Unix socket server's side of one connection from this very process. */
async function acceptedFromSelf(name: string): Promise<{ accepted: Socket; close: () => void }> {
  const path = join(dir, name);
  const server = createServer();
  server.listen(path);
  await once(server, 'listening');
  const client = createConnection(path);
  const [accepted] = (await once(server, 'connection')) as [Socket];
  return {
    accepted,
    close: () => {
      client.destroy();
      accepted.destroy();
      server.close();
    },
  };
}

describe('peer credentials', () => {
  test("an accepted connection's fd is readable where peer.ts reads it", async () => {
    const { accepted, close } = await acceptedFromSelf('fd.sock');
    try {
      const fd = socketFd(accepted);
      assert.ok(
        typeof fd === 'number' && fd > 2,
        `socket._handle.fd is ${String(fd)} on Node ${process.version}: Node changed its internals; find the fd another way in src/daemon/peer.ts`,
      );
    } finally {
      close();
    }
  });

  test('SO_PEERCRED names this process as the peer of its own connection', async () => {
    const { accepted, close } = await acceptedFromSelf('cred.sock');
    try {
      const cred = recordPeer(accepted);
      assert.deepEqual(cred, { pid: process.pid, uid: process.geteuid!(), gid: process.getegid!() });
      assert.deepEqual(peerOf(accepted), cred);
    } finally {
      close();
    }
  });
});
