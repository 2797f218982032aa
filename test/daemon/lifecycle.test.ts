// agentd as a service: socket permissions, socket activation with an inherited fd, sd_notify
// messages on a test NOTIFY_SOCKET, SIGTERM, stale and contested sockets, journald and JSON logs.

import { test, describe, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { existsSync, lstatSync, rmSync, statSync, unlinkSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { groupId } from '../../src/daemon/listen.js';
import { Lab, anyHierarchy } from '../helpers/lab.js';
import { kernelState } from '../lock/helpers.js';
import { AGENTD, agentArgs, agentPaths, api, startAgent } from './agent.js';
import { NotifyReceiver, closeFd, listeningSocket } from './sockets.js';

const lab = new Lab('daemon-life');
after(() => lab.cleanup());

/** Runs a tiny HTTP client as another user (setpriv), printing the status or the errno. */
function requestAs(user: string[], socket: string, method: string, path: string, body?: unknown): Promise<string> {
  const script = `
    const req = require('node:http').request({ socketPath: process.argv[1], method: process.argv[2], path: process.argv[3],
      headers: { 'Content-Type': 'application/json' } }, (res) => { res.resume(); res.on('end', () => console.log(res.statusCode)); });
    req.on('error', (e) => console.log(e.code));
    req.end(process.argv[4] || undefined);`;
  return new Promise((resolve, reject) => {
    const args = [...user, process.execPath, '-e', script, socket, method, path, body === undefined ? '' : JSON.stringify(body)];
    const child = spawn('setpriv', args, { stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    let err = '';
    child.stdout.on('data', (d) => (out += d));
    child.stderr.on('data', (d) => (err += d));
    child.on('error', reject);
    child.on('close', () => (out.trim() ? resolve(out.trim()) : reject(new Error(`setpriv: ${err}`))));
  });
}

describe('the socket', () => {
  test('is 0660, root-owned, group agentd when it exists; nobody is refused by its mode, the group is let in', async () => {
    const agent = await startAgent(lab);
    try {
      const st = statSync(agent.socket);
      assert.ok(lstatSync(agent.socket).isSocket());
      assert.equal(st.mode & 0o777, 0o660);
      assert.equal(st.uid, 0);
      const agentdGid = groupId('agentd');
      assert.equal(st.gid, agentdGid ?? 0, agentdGid === undefined ? 'no group agentd here: group root' : 'group agentd');
      // The directory is traversable by all (agentPaths makes it 0755): only the socket's mode decides.
      assert.equal(statSync(agent.dir).mode & 0o005, 0o005);

      const nobody = ['--reuid=nobody', '--regid=nogroup', '--clear-groups'];
      assert.equal(await requestAs(nobody, agent.socket, 'GET', '/v1/health'), 'EACCES');
      assert.equal(await requestAs(nobody, agent.socket, 'POST', '/v1/cgroups/freeze', { cgroup: 'x' }), 'EACCES');

      // The same user, given the socket's group, gets in; its requests are logged with its uid.
      const member = ['--reuid=nobody', `--regid=${st.gid}`, '--clear-groups'];
      assert.equal(await requestAs(member, agent.socket, 'GET', '/v1/health'), '200');
      const cgroup = lab.cgroup(anyHierarchy(), 'peer');
      assert.equal(
        await requestAs(member, agent.socket, 'POST', '/v1/cgroups/thaw', { cgroup: cgroup.path, hierarchy: cgroup.hierarchy }),
        '200',
      );
      assert.match(
        agent.log(),
        new RegExp(
          `info: thaw uid=65534 pid=\\d+ operation=thaw cgroup=${cgroup.hierarchy}:${cgroup.path} outcome=ok status=200 ms=[\\d.]+`,
        ),
      );
    } finally {
      assert.equal(await agent.stop(), 0);
    }
    assert.equal(existsSync(agent.socket), false, 'a socket agentd bound is removed when it stops');
  });

  test('a stale socket file is replaced; a live agent on the path, or a non-socket, is never touched', async () => {
    const paths = agentPaths(lab);
    // A socket nobody listens on any more, as a killed agent leaves it.
    closeFd(listeningSocket(paths.socket));
    assert.ok(lstatSync(paths.socket).isSocket());
    const first = await startAgent(lab, { dir: paths.dir });
    try {
      const second = await startAgent(lab, { dir: paths.dir, waitReady: false });
      assert.equal(await second.exited, 1);
      assert.match(second.log(), /another agent is already listening on .*agentd\.sock/);
      assert.equal((await api(first.socket, 'GET', '/v1/health')).body.pid, first.pid, 'the first agent still serves');
    } finally {
      assert.equal(await first.stop(), 0);
    }
    writeFileSync(paths.socket, 'not a socket');
    const third = await startAgent(lab, { dir: paths.dir, waitReady: false });
    assert.equal(await third.exited, 1);
    assert.match(third.log(), /it exists and is not a socket/);
    assert.equal(existsSync(paths.socket), true);
    unlinkSync(paths.socket);
  });
});

describe('systemd integration', () => {
  test('socket activation: agentd serves the listening socket it inherits as fd 3 (LISTEN_FDS, LISTEN_PID = its pid)', async () => {
    const paths = agentPaths(lab);
    const fd = listeningSocket(paths.socket);
    try {
      const before = statSync(paths.socket);
      // LISTEN_PID must name agentd itself: the shell learns its own pid ($$), then execs node in place.
      const agent = await startAgent(lab, {
        dir: paths.dir,
        env: { LISTEN_FDS: '1' },
        stdio: ['ignore', 'pipe', 'pipe', fd],
        command: { file: 'sh', args: ['-c', 'LISTEN_PID=$$ exec "$@"', 'sh', process.execPath, AGENTD, ...agentArgs(paths)] },
      });
      closeFd(fd); // agentd has its own copy now; from here on only agentd holds the socket
      try {
        assert.match(agent.log(), /agentd ready socket=\S+ activated=true/);
        assert.equal(statSync(paths.socket).ino, before.ino, 'the same socket: agentd did not bind a new one');
        const health = await api(paths.socket, 'GET', '/v1/health');
        assert.equal(health.status, 200);
        assert.equal(health.body.pid, agent.pid);
      } finally {
        assert.equal(await agent.stop(), 0);
      }
      assert.equal(statSync(paths.socket).ino, before.ino, 'an inherited socket is left in place: it belongs to agentd.socket');
    } finally {
      closeFd(fd);
      rmSync(paths.socket, { force: true });
    }
  });

  test('LISTEN_FDS meant for another process (LISTEN_PID is not ours) is ignored, as sd_listen_fds does', async () => {
    const paths = agentPaths(lab);
    const fd = listeningSocket(paths.socket);
    try {
      const agent = await startAgent(lab, {
        dir: paths.dir,
        waitReady: false,
        env: { LISTEN_FDS: '1', LISTEN_PID: '1' },
        stdio: ['ignore', 'pipe', 'pipe', fd],
      });
      // It binds the path itself, finds the test's socket listening there, and refuses to steal it.
      assert.equal(await agent.exited, 1);
      assert.match(agent.log(), /another agent is already listening/);
    } finally {
      closeFd(fd);
      rmSync(paths.socket, { force: true });
    }
  });

  test('READY=1 once listening, WATCHDOG=1 at half WATCHDOG_USEC, STOPPING=1 on SIGTERM, then exit 0', async () => {
    const notifyPath = join(lab.tempDir('notify'), 'notify.sock');
    const receiver = new NotifyReceiver(notifyPath);
    try {
      const agent = await startAgent(lab, { env: { NOTIFY_SOCKET: notifyPath, WATCHDOG_USEC: '200000' } });
      const ready = await receiver.waitFor('READY=1');
      assert.match(ready, new RegExp(`^MAINPID=${agent.pid}$`, 'm'));
      assert.match(ready, /^STATUS=idle$/m);
      assert.equal((await api(agent.socket, 'GET', '/v1/health')).status, 200, 'ready means it answers');
      await receiver.waitFor('WATCHDOG=1');
      assert.ok(!receiver.messages.some((m) => m.includes('STOPPING=1')));
      agent.child.kill('SIGTERM');
      await receiver.waitFor('STOPPING=1');
      assert.equal(await agent.exited, 0);
      assert.match(agent.log(), /agentd stopped reason=SIGTERM/);
    } finally {
      receiver.close();
    }
  });

  test('SIGTERM while agentd is still starting: it finishes starting, then stops cleanly (exit 0), never killed by the signal', async () => {
    const agent = await startAgent(lab, { waitReady: false });
    // "agentd starting" is its first line, written after the handlers are in place and before the
    // CRIU probe and recovery: the signal lands while it starts.
    const deadline = Date.now() + 60_000;
    while (!/agentd starting/.test(agent.log()) && Date.now() < deadline) await new Promise((r) => setTimeout(r, 5));
    assert.match(agent.log(), /agentd starting/);
    agent.child.kill('SIGTERM');
    assert.equal(await agent.exited, 0, agent.log());
    const log = agent.log();
    assert.match(log, /agentd stopped reason=SIGTERM/);
    const early = log.indexOf('SIGTERM while starting');
    if (early >= 0) assert.ok(early < log.indexOf('agentd ready'), 'the early signal is noted before ready, acted on after');
  });

  test('an abstract NOTIFY_SOCKET (@name) works too', async () => {
    const name = `@${lab.prefix}-notify`;
    const receiver = new NotifyReceiver(name);
    try {
      const agent = await startAgent(lab, { env: { NOTIFY_SOCKET: name } });
      await receiver.waitFor('READY=1');
      assert.equal(await agent.stop(), 0);
      await receiver.waitFor('STOPPING=1');
    } finally {
      receiver.close();
    }
  });
});

describe('logging', () => {
  test('under journald (JOURNAL_STREAM names its stderr) every line starts with its syslog priority', async () => {
    const paths = agentPaths(lab);
    // The wrapper sets JOURNAL_STREAM to the device:inode of its own stderr, as systemd does.
    const agent = await startAgent(lab, {
      dir: paths.dir,
      command: {
        file: 'sh',
        args: [
          '-c',
          'JOURNAL_STREAM=$(stat -L -c %d:%i /proc/self/fd/2) exec "$@"',
          'sh',
          process.execPath,
          AGENTD,
          ...agentArgs(paths),
          '--criu',
          '/nonexistent/criu',
        ],
      },
    });
    const cgroup = lab.cgroup(anyHierarchy(), 'journal');
    lab.spawnIn(cgroup, 'sleep', ['100000']);
    await lab.waitForProcesses(cgroup, 1);
    await api(agent.socket, 'POST', '/v1/cgroups/freeze', { body: { cgroup: cgroup.path, hierarchy: cgroup.hierarchy, extra: 1 } }); // 400: warn
    const failed = await api(agent.socket, 'POST', '/v1/checkpoints', { body: { cgroup: cgroup.path, hierarchy: cgroup.hierarchy } }); // ECRIU: error
    assert.equal(failed.status, 500);
    assert.equal(failed.body.error.code, 'ECRIU');
    assert.equal(kernelState(cgroup), 'THAWED');
    assert.equal(await agent.stop(), 0);
    const lines = agent.log().trim().split('\n');
    for (const line of lines) assert.match(line, /^<[3467]>(error|warn|info|debug): /, line);
    assert.ok(lines.some((l) => l.startsWith('<6>info: agentd ready')));
    assert.ok(lines.some((l) => l.startsWith('<7>debug: GET /v1/health')));
    assert.ok(lines.some((l) => /^<4>warn: freeze .*outcome=EINVAL status=400/.test(l)));
    assert.ok(lines.some((l) => /^<3>error: checkpoint .*outcome=ECRIU status=500/.test(l)));
  });

  test('a JOURNAL_STREAM inherited from elsewhere is ignored; --log-format json writes one object per line', async () => {
    const agent = await startAgent(lab, { args: ['--log-format', 'json'], env: { JOURNAL_STREAM: '8:12345' } });
    await api(agent.socket, 'POST', '/v1/cgroups/thaw', { body: { cgroup: 'agentd-test-missing' } });
    assert.equal(await agent.stop(), 0);
    const entries = agent
      .log()
      .trim()
      .split('\n')
      .map((line) => JSON.parse(line));
    assert.ok(entries.every((e) => typeof e.time === 'string' && typeof e.level === 'string' && typeof e.message === 'string'));
    const thaw = entries.find((e) => e.message === 'thaw');
    assert.equal(thaw.level, 'warn');
    assert.equal(thaw.uid, 0);
    assert.equal(thaw.outcome, 'ENOENT');
    assert.equal(thaw.status, 404);
    assert.equal(typeof thaw.ms, 'number');
  });
});
