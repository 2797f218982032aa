// networkLockFor: the lock a dump is given, decided from the sockets real processes hold. A tree
// with nothing CRIU locks gets `skip`; a TCP connection with a peer, a socket in none of the
// kernel's tables, another network namespace or a CRIU too old for the word keep the agent's lock.
// The /proc readers below it are checked on the same processes.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { networkLockFor } from '../../src/criu/index.js';
import { parseSocketTable, parseTcpTable, readNetNamespace, readSocketInodes, readTcpSockets } from '../../src/proc/index.js';
import { waitUntil } from '../helpers/lab.js';

const CRIU = { version: '4.2.1', networkLock: 'nftables' as const };

// Each program prints "ready" once its sockets are open, then sleeps until killed. Its stdout is a
// pipe, which Node makes of a Unix socket pair: every one of them holds a Unix socket too.
const PROGRAMS = {
  unixAndUdp: `
    const net = require('node:net'), dgram = require('node:dgram');
    const path = require('node:path').join(require('node:os').tmpdir(), 'agentd-nl-' + process.pid + '.sock');
    const udp = dgram.createSocket('udp4');
    udp.bind(0, '127.0.0.1', () => net.createServer().listen(path, () => console.log('ready')));
    process.on('SIGTERM', () => { require('node:fs').rmSync(path, { force: true }); process.exit(0); });`,
  listening: `require('node:net').createServer().listen(0, '127.0.0.1', () => console.log('ready'));`,
  connected: `
    const net = require('node:net');
    const server = net.createServer(() => console.log('ready'));
    server.listen(0, '127.0.0.1', () => net.connect(server.address().port, '127.0.0.1'));`,
};

async function run(t: { after: (fn: () => void) => void }, program: string): Promise<number> {
  const child: ChildProcess = spawn(process.execPath, ['-e', program + '\nsetInterval(() => {}, 1 << 30);'], {
    stdio: ['ignore', 'pipe', 'inherit'],
  });
  t.after(() => child.kill('SIGTERM'));
  let out = '';
  child.stdout!.on('data', (chunk: Buffer) => (out += chunk.toString()));
  await once(child, 'spawn');
  await waitUntil('the program to open its sockets', () => out.includes('ready'), 15_000);
  return child.pid!;
}

function sleeper(t: { after: (fn: () => void) => void }, command: string[] = ['sleep', '60']): number {
  const child = spawn(command[0], command.slice(1), { stdio: 'ignore' });
  t.after(() => child.kill('SIGKILL'));
  return child.pid!;
}

test('a process with no socket at all, and one that is gone, need no lock', async (t) => {
  const pid = sleeper(t);
  await waitUntil('sleep to exec', () => readSocketInodes(pid)?.length === 0);
  assert.equal(networkLockFor(CRIU, [pid]), 'skip');
  assert.equal(readSocketInodes(2 ** 22 + 1), undefined, 'a pid above pid_max is nobody');
  assert.equal(networkLockFor(CRIU, [2 ** 22 + 1]), 'skip');
});

test('Unix sockets, a UDP socket and a listening TCP socket need no lock: CRIU locks none of them', async (t) => {
  const mixed = await run(t, PROGRAMS.unixAndUdp);
  const sockets = readSocketInodes(mixed)!;
  assert.ok(sockets.length >= 3, `stdout's socket pair, the Unix listener and the UDP socket: ${sockets.join(', ')}`);
  assert.equal(networkLockFor(CRIU, [mixed]), 'skip');

  const listener = await run(t, PROGRAMS.listening);
  const tcp = readTcpSockets(listener).filter((s) => readSocketInodes(listener)!.includes(s.inode));
  assert.deepEqual(
    tcp.map((s) => [s.state, s.remotePort]),
    [[10, 0]],
    'one TCP socket, LISTEN, no peer',
  );
  assert.equal(networkLockFor(CRIU, [mixed, listener]), 'skip');
});

test("a TCP connection with a peer keeps the agent's lock, whichever process of the tree holds it", async (t) => {
  const quiet = sleeper(t);
  const connected = await run(t, PROGRAMS.connected);
  const own = readSocketInodes(connected)!;
  const tcp = readTcpSockets(connected).filter((s) => own.includes(s.inode));
  assert.equal(tcp.filter((s) => s.state === 1 && s.remotePort !== 0).length, 2, 'both ends of the connection, ESTABLISHED');
  assert.equal(networkLockFor(CRIU, [quiet, connected]), 'nftables');
  assert.equal(networkLockFor({ ...CRIU, networkLock: 'iptables' }, [connected]), 'iptables');
  assert.equal(networkLockFor({ ...CRIU, networkLock: null }, [connected]), null, "no lock known: CRIU's default");
});

test('a process in a network namespace of its own keeps the lock (CRIU dumps and locks the namespace)', async (t) => {
  const pid = sleeper(t, ['unshare', '--net', 'sleep', '60']);
  await waitUntil('unshare to exec sleep', () => readNetNamespace(pid) !== readNetNamespace('self'));
  assert.equal(readSocketInodes(pid)?.length, 0, 'it holds no socket');
  assert.equal(networkLockFor(CRIU, [pid]), 'nftables');
});

test('a CRIU older than 3.19 does not know `skip`: it keeps the lock', async (t) => {
  const pid = sleeper(t);
  assert.equal(networkLockFor({ ...CRIU, version: '3.17.1' }, [pid]), 'nftables');
  assert.equal(networkLockFor({ ...CRIU, version: '3.19' }, [pid]), 'skip');
});

test('the tables are read by their columns, header skipped', () => {
  const tcp = [
    '  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode',
    '   0: 0100007F:A41F 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 5101 1 0 100 0 0 10 0',
    '   1: 0100007F:A41F 0100007F:C350 01 00000000:00000000 00:00000000 00000000     0        0 5102 1 0 20 4 30 10 -1',
    '   2: 0100007F:C351 0100007F:A41F 06 00000000:00000000 03:00001770 00000000     0        0 0 3 0',
  ].join('\n');
  assert.deepEqual(parseTcpTable(tcp), [
    { inode: 5101, state: 10, remotePort: 0 },
    { inode: 5102, state: 1, remotePort: 0xc350 },
    { inode: 0, state: 6, remotePort: 0xa41f },
  ]);
  const unix = [
    'Num       RefCount Protocol Flags    Type St Inode Path',
    '0000000033fbc9b7: 00000002 00000000 00010000 0001 01 5779313 /run/x.sock',
  ].join('\n');
  assert.deepEqual([...parseSocketTable('unix', unix)], [5779313]);
  assert.deepEqual([...parseSocketTable('udp', 'header only\n')], []);
});
