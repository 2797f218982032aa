// Fidelity, servers: programs from Debian's archive that nobody here wrote, checkpointed and restored
// through a real agentd (its HTTP API on a private socket), on v1 and v2. What they prove:
// - python3 -m http.server listening on 127.0.0.1: dumped (--after killed), the port is closed;
//   restored, the same pid answers GET with the same bytes;
// - the same server with connections open across a checkpoint (tcpEstablished, after thawed; agentd
//   passes CRIU the network lock this host can use, docs/criu.md): a request half-sent by a client
//   outside is answered whole after it, and wget downloading inside the cgroup finishes with a file
//   byte-identical to the served one;
// - redis-server holding data only in memory (no RDB, no AOF), its client connected from outside the
//   cgroup: refused without tcpEstablished, naming the option; with it, every record written before
//   the checkpoint is there after the restore, it takes new writes, and the dead connection is dropped;
// - nginx, a master and 2 pre-forked workers: all 3 processes come back with their pids and serve.
// Every program listens on a loopback port the kernel picked free at run time; the lab kills every
// process of the test cgroups and removes the files whether a test passes or fails.

import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { existsSync, mkdirSync, readFileSync, readdirSync, readlinkSync, statSync, writeFileSync } from 'node:fs';
import { connect } from 'node:net';
import { join } from 'node:path';
import { describe, test } from 'node:test';
import { HIERARCHIES, pidAlive, unavailable, waitUntil, workload, type TestCgroup } from '../helpers/lab.js';
import { agentctl, api, startAgent, waitHealthy, withAgent } from '../daemon/agent.js';
import {
  accepts,
  freePort,
  generatedText,
  HalfRequest,
  httpGet,
  missing,
  PROGRAMS,
  RedisClient,
  threadCount,
  waitListening,
} from './programs.js';

const { lab, agent } = withAgent('fidelity-servers');

const sha256 = (data: Buffer): string => createHash('sha256').update(data).digest('hex');
const sorted = (pids: readonly number[]): number[] => [...pids].sort((a, b) => a - b);

interface Checkpointed {
  readonly id: string;
  readonly processes: number;
}

/** POST /v1/checkpoints, asserting 201. */
async function checkpoint(cgroup: TestCgroup, options: Record<string, unknown>): Promise<Checkpointed> {
  const res = await api(agent.socket, 'POST', '/v1/checkpoints', {
    body: { cgroup: cgroup.path, hierarchy: cgroup.hierarchy, ...options },
  });
  assert.equal(res.status, 201, res.text);
  return res.body;
}

/** POST /v1/checkpoints/ID/restore, asserting 200; the restored pids. */
async function restore(id: string): Promise<number[]> {
  const res = await api(agent.socket, 'POST', `/v1/checkpoints/${id}/restore`, { body: {} });
  assert.equal(res.status, 200, res.text);
  return sorted(res.body.pids);
}

/** Waits until every pid of a killed checkpoint is gone (CRIU restores the same pids). */
async function waitKilled(pids: readonly number[]): Promise<void> {
  await waitUntil(`pids ${pids.join(' ')} to be gone`, () => pids.every((pid) => !pidAlive(pid)), 20_000);
}

function commOf(pid: number): string {
  return readFileSync(`/proc/${pid}/comm`, 'utf8').trim();
}

for (const hierarchy of HIERARCHIES) {
  describe(`servers from Debian, cgroup ${hierarchy}`, { skip: unavailable(hierarchy) }, () => {
    test(
      'python3 -m http.server: killed by the checkpoint, restored, it answers on its port again',
      { skip: missing('python3') },
      async () => {
        const cgroup = lab.cgroup(hierarchy, 'http');
        const www = lab.tempDir('www');
        const page = generatedText(64 << 10);
        writeFileSync(join(www, 'page.txt'), page);
        const port = await freePort();
        lab.spawnIn(cgroup, PROGRAMS.python3, ['-m', 'http.server', String(port), '--bind', '127.0.0.1', '--directory', www]);
        await waitListening(port, 'http.server');
        const before = await httpGet(port, '/page.txt');
        assert.equal(before.status, 200);
        const pids = sorted(lab.pidsOf(cgroup));

        const { id } = await checkpoint(cgroup, { after: 'killed' });
        await waitKilled(pids);
        assert.equal(await accepts(port), false, 'nothing listens while it is checkpointed');

        assert.deepEqual(await restore(id), pids);
        assert.deepEqual(sorted(lab.pidsOf(cgroup)), pids);
        const after = await httpGet(port, '/page.txt');
        assert.equal(after.status, 200);
        assert.equal(sha256(after.body), sha256(page));
        assert.equal((await httpGet(port, '/missing')).status, 404);
      },
    );

    test(
      'http.server with connections open across the checkpoint (tcpEstablished): a half-sent request is answered after it, wget inside goes on, byte-identical',
      { skip: missing('python3', 'wget') },
      async () => {
        const host = await api(agent.socket, 'GET', '/v1/host');
        assert.equal(host.body.criu.networkLock, 'nftables', 'this host has no iptables command: agentd must pick the nftables lock');
        const shown = await agentctl(['--socket', agent.socket, 'host']);
        assert.match(
          shown.stdout,
          /^\s+tcp lock:\s+nftables \(CRIU --network-lock: how a dump locks the TCP connections it saves\)$/m,
          shown.stderr,
        );
        const cgroup = lab.cgroup(hierarchy, 'download');
        const www = lab.tempDir('www');
        const work = lab.tempDir('wget');
        // 16 MiB at 8 MiB/s: about 2 s of transfer, checkpointed once wget has 256 KiB.
        const data = generatedText(16 << 20);
        writeFileSync(join(www, 'big.bin'), data);
        const page = generatedText(32 << 10);
        writeFileSync(join(www, 'page.txt'), page);
        const out = join(work, 'big.bin');
        const port = await freePort();
        const launcher = lab.spawnIn(cgroup, workload('together.pl'), [
          PROGRAMS.python3,
          '-m',
          'http.server',
          String(port),
          '--bind',
          '127.0.0.1',
          '--directory',
          www,
          '--',
          PROGRAMS.wget,
          '--no-verbose',
          '--limit-rate=8m',
          '--tries=1',
          '-o',
          join(work, 'wget.log'),
          '-O',
          out,
          `http://127.0.0.1:${port}/big.bin`,
        ]);
        await waitListening(port, 'http.server');
        // A client outside the cgroup sends half a request: the server's end of it is in the image.
        const client = new HalfRequest(port);
        await client.connected;
        client.send('GET /page.txt HTTP/1.0\r\n');
        launcher.kill('SIGUSR1');
        await waitUntil('wget to have 256 KiB', () => statSync(out).size >= 256 << 10, 120_000);
        const pids = sorted(await lab.waitForProcesses(cgroup, 3));
        const wgetPid = pids.find((pid) => commOf(pid) === 'wget');
        assert.ok(wgetPid, 'wget runs');

        // Without the network lock this dump fails ("Iptables configuration failed", docs/criu.md).
        const { id, processes } = await checkpoint(cgroup, { after: 'thawed', tcpEstablished: true });
        const trees = (await api(agent.socket, 'GET', `/v1/checkpoints/${id}`)).body.trees;
        assert.deepEqual(
          trees.map((t: { networkLock?: string }) => t.networkLock),
          ['nftables'],
          'connections with a peer: the dump takes the lock (src/criu/network-lock.ts)',
        );
        // wget ends when its download does: dumped alive, it was under way during the checkpoint. (Its
        // file's size after the checkpoint says nothing: a slow guest thaws it only after seconds.)
        assert.equal(processes, 3, 'launcher, server and wget were dumped (wget had not finished)');

        client.send('Host: 127.0.0.1\r\n\r\n');
        const answer = await client.response();
        assert.equal(answer.status, 200);
        assert.equal(sha256(answer.body), sha256(page), 'the request begun before the checkpoint is answered whole after it');
        await waitUntil('wget to finish', () => !pidAlive(wgetPid), 60_000);
        assert.equal(statSync(out).size, data.length, readFileSync(join(work, 'wget.log'), 'utf8'));
        assert.equal(sha256(readFileSync(out)), sha256(data), 'the download went on across the checkpoint, byte-identical');
        assert.deepEqual(
          sorted(lab.pidsOf(cgroup)),
          pids.filter((pid) => pid !== wgetPid),
          'the server and its launcher run on',
        );
      },
    );

    test(
      'redis-server with no persistence, a client connected from outside: every record survives, it takes writes after',
      { skip: missing('redis') },
      async () => {
        const cgroup = lab.cgroup(hierarchy, 'redis');
        const dir = lab.tempDir('redis');
        const port = await freePort();
        lab.spawnIn(cgroup, PROGRAMS.redis, [
          '--port',
          String(port),
          '--bind',
          '127.0.0.1',
          '--save',
          '',
          '--appendonly',
          'no',
          '--daemonize',
          'no',
          '--dir',
          dir,
          '--logfile',
          join(dir, 'redis.log'),
        ]);
        await waitListening(port, 'redis-server');
        const [pid] = lab.pidsOf(cgroup);
        const N = 2000;
        const key = (i: number) => `key:${i}`;
        const value = (i: number) => `value-${i}-${'x'.repeat(i % 97)}`;
        // The writer stays connected across the checkpoint, as a server's clients do: its end is
        // outside the cgroup, so only redis's end of the connection is in the image.
        const writer = await RedisClient.connect(port);
        try {
          const replies = await writer.pipeline(Array.from({ length: N }, (_, i) => ['SET', key(i), value(i)]));
          assert.ok(replies.every((r) => r === 'OK'));
          assert.equal(await writer.command('DBSIZE'), N);

          // Without tcpEstablished CRIU refuses the connected socket, and says which option it needs.
          const refused = await api(agent.socket, 'POST', '/v1/checkpoints', { body: { cgroup: cgroup.path, hierarchy, after: 'killed' } });
          assert.equal(refused.status, 500, refused.text);
          assert.equal(refused.body.error.code, 'ECRIU');
          assert.match(refused.body.error.message, /Connected TCP socket, consider using --tcp-established option/);
          assert.equal(await writer.command('GET', key(7)), value(7), 'redis and its client went on as before');

          // Counted now, not at start: redis starts one of its threads only once it has work (4 at
          // start, 5 after the writes, seen once).
          const threads = threadCount(pid);
          assert.ok(threads >= 2, `redis-server runs background threads (${threads})`);
          const { id } = await checkpoint(cgroup, { after: 'killed', tcpEstablished: true });
          await waitKilled([pid]);
          assert.equal(await accepts(port), false);
          assert.deepEqual(await restore(id), [pid]);
          assert.equal(threadCount(pid), threads, 'its threads came back');
        } finally {
          writer.close();
        }

        const reader = await RedisClient.connect(port);
        try {
          assert.equal(await reader.command('DBSIZE'), N);
          const values = (await reader.command('MGET', ...Array.from({ length: N }, (_, i) => key(i)))) as (string | null)[];
          assert.deepEqual(
            values,
            Array.from({ length: N }, (_, i) => value(i)),
          );
          assert.equal(await reader.command('SET', 'after-restore', 'yes'), 'OK');
          assert.equal(await reader.command('GET', 'after-restore'), 'yes');
          assert.equal(await reader.command('DBSIZE'), N + 1);
          // The restored end of the writer's connection, whose peer is gone, is reset and dropped.
          const clients = async () => Number(/connected_clients:(\d+)/.exec(String(await reader.command('INFO', 'clients')))?.[1]);
          const deadline = Date.now() + 10_000;
          while ((await clients()) !== 1 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 50));
          assert.equal(await clients(), 1, 'only the new client is connected');
        } finally {
          reader.close();
        }
      },
    );

    test('nginx with 2 pre-forked workers: the master and both workers come back and serve', { skip: missing('nginx') }, async () => {
      const cgroup = lab.cgroup(hierarchy, 'nginx');
      const prefix = lab.tempDir('nginx');
      const www = join(prefix, 'www');
      mkdirSync(www);
      const page = generatedText(16 << 10);
      writeFileSync(join(www, 'index.html'), page);
      const port = await freePort();
      const conf = join(prefix, 'nginx.conf');
      // Everything private to the test: pid file, logs, temp paths; no include of /etc/nginx.
      writeFileSync(
        conf,
        [
          'daemon off;',
          'master_process on;',
          'worker_processes 2;',
          'user root;',
          `pid ${prefix}/nginx.pid;`,
          `error_log ${prefix}/error.log warn;`,
          'events { worker_connections 64; }',
          'http {',
          '  access_log off;',
          `  client_body_temp_path ${prefix}/body;`,
          `  proxy_temp_path ${prefix}/proxy;`,
          `  fastcgi_temp_path ${prefix}/fastcgi;`,
          `  server { listen 127.0.0.1:${port}; root ${www}; }`,
          '}',
          '',
        ].join('\n'),
      );
      lab.spawnIn(cgroup, PROGRAMS.nginx, ['-p', prefix, '-c', conf, '-e', join(prefix, 'error.log')]);
      const pids = sorted(await lab.waitForProcesses(cgroup, 3));
      await waitListening(port, 'nginx');
      assert.equal((await httpGet(port, '/index.html')).status, 200);
      assert.deepEqual(pids.map(commOf), ['nginx', 'nginx', 'nginx']);

      const { id, processes } = await checkpoint(cgroup, { after: 'killed' });
      assert.equal(processes, 3);
      await waitKilled(pids);
      assert.deepEqual(await restore(id), pids);
      assert.deepEqual(sorted(lab.pidsOf(cgroup)), pids, 'master and both workers are back');
      for (let i = 0; i < 6; i++) {
        const res = await httpGet(port, '/index.html');
        assert.equal(res.status, 200);
        assert.equal(sha256(res.body), sha256(page));
      }
      assert.deepEqual(sorted(lab.pidsOf(cgroup)), pids, 'no worker died serving');
    });

    test(
      "a server still holding a connection it has closed: CRIU locks it with the agent's network lock, also where iptables-restore is missing",
      { skip: missing('python3') },
      async (t) => {
        // The state nginx's workers are in for a moment after each request: the client hung up, the
        // server shut its end and the socket is closed, but the fd is still open. CRIU saves such a
        // socket locked (even without --tcp-established); with its default lock it runs
        // iptables-restore, and without that command the dump failed ("Iptables configuration
        // failed", a whole-suite run on a fresh machine). A second agent whose PATH has no
        // /usr/sbin plays that machine; here the state is held, not caught.
        const host = await api(agent.socket, 'GET', '/v1/host');
        if (host.body.criu?.networkLock !== 'nftables') {
          t.skip(
            `this CRIU locks connections with ${host.body.criu?.networkLock ?? 'nothing'}, not nftables: without iptables-restore it cannot`,
          );
          return;
        }
        const bare = await startAgent(lab, { env: { PATH: '/usr/local/sbin:/usr/local/bin:/usr/bin:/bin' } });
        try {
          await waitHealthy(bare);
          const cgroup = lab.cgroup(hierarchy, 'closed-conn');
          const portFile = join(lab.tempDir('closed-conn'), 'port');
          const server = [
            'import socket, time',
            "s = socket.socket(); s.bind(('127.0.0.1', 0)); s.listen(1)",
            `open(${JSON.stringify(portFile)}, 'w').write(str(s.getsockname()[1]))`,
            'c, _ = s.accept()',
            'while c.recv(100): pass',
            'c.shutdown(socket.SHUT_WR)',
            'time.sleep(100000)',
          ].join('\n');
          lab.spawnIn(cgroup, PROGRAMS.python3, ['-c', server]);
          await waitUntil('the server to listen', () => existsSync(portFile) && readFileSync(portFile, 'utf8') !== '', 30_000);
          const port = Number(readFileSync(portFile, 'utf8'));
          await new Promise<void>((resolve, reject) => {
            const client = connect(port, '127.0.0.1', () => client.end('bye'));
            client.on('error', reject);
            client.on('close', () => resolve());
            client.resume();
          });
          // Only the listener is left in the kernel's table: the closed socket is out of it, its fd is not.
          const local = `:${port.toString(16).toUpperCase().padStart(4, '0')} `;
          const serverSockets = () =>
            readFileSync('/proc/net/tcp', 'utf8')
              .split('\n')
              .filter((l) => l.split(/\s+/)[2]?.endsWith(local.trim()));
          await waitUntil(
            'the server end of the connection to be closed',
            () => serverSockets().every((l) => l.split(/\s+/)[4] === '0A'),
            30_000,
          );
          const [pid] = lab.pidsOf(cgroup);
          const fds = readdirSync(`/proc/${pid}/fd`).filter((fd) => readlinkSync(`/proc/${pid}/fd/${fd}`).startsWith('socket:'));
          assert.equal(fds.length, 2, 'the listener and the closed connection');
          const made = await api(bare.socket, 'POST', '/v1/checkpoints', { body: { cgroup: cgroup.path, hierarchy, after: 'killed' } });
          assert.equal(made.status, 201, made.text);
          // The closed socket is in none of the kernel's tables (it is unhashed once closed): locked.
          const trees = (await api(bare.socket, 'GET', `/v1/checkpoints/${made.body.id}`)).body.trees;
          assert.deepEqual(
            trees.map((t: { networkLock?: string }) => t.networkLock),
            ['nftables'],
          );
          await waitKilled([pid]);
          const back = await api(bare.socket, 'POST', `/v1/checkpoints/${made.body.id}/restore`, { body: {} });
          assert.equal(back.status, 200, back.text);
          assert.deepEqual(back.body.pids, [pid]);
          assert.equal(await accepts(port), true, 'the restored server listens again');
          await lab.killIn(cgroup);
        } finally {
          await bare.stop();
        }
      },
    );
  });
}
