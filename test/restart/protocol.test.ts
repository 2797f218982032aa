// The wire protocol, spoken by hand over a raw socket: the documented messages work, and garbage from
// a client is refused (before joining) or fails the restart (after joining) instead of hanging it.
// At the end, the participant's side against a coordinator played by hand.
// The saved array names pid 1 for the hand-driven participant: it always exists, so the coordinator's
// liveness checks pass, and nothing here ever signals it.

import assert from 'node:assert/strict';
import { connect, createServer, type Socket } from 'node:net';
import { join } from 'node:path';
import { test } from 'node:test';
import { once } from 'node:events';
import { AgentError, isAgentError } from '../../src/errors/index.js';
import { joinRestart, runCoordinator, type RestartEvent } from '../../src/restart/index.js';
import { newRun } from './helpers.js';

interface RawClient {
  socket: Socket;
  send(line: string): void;
  /** Resolves with the next message the coordinator sends. */
  next(): Promise<Record<string, unknown>>;
  closed: Promise<void>;
}

async function rawClient(socketPath: string): Promise<RawClient> {
  const socket = connect(socketPath);
  await once(socket, 'connect');
  socket.on('error', () => {}); // a reset after the coordinator hung up shows as the close below
  const queue: Array<Record<string, unknown>> = [];
  const waiters: Array<(m: Record<string, unknown>) => void> = [];
  let pending = '';
  socket.setEncoding('utf8');
  socket.on('data', (chunk: string) => {
    pending += chunk;
    let i: number;
    while ((i = pending.indexOf('\n')) >= 0) {
      const message = JSON.parse(pending.slice(0, i)) as Record<string, unknown>;
      pending = pending.slice(i + 1);
      const waiter = waiters.shift();
      if (waiter) waiter(message);
      else queue.push(message);
    }
  });
  return {
    socket,
    send: (line) => socket.write(`${line}\n`),
    next: () => (queue.length > 0 ? Promise.resolve(queue.shift()!) : new Promise((resolve) => waiters.push(resolve))),
    closed: once(socket, 'close').then(() => undefined),
  };
}

/** A coordinator for [root (this process), a (pid 1)], with a promise for its listening socket. */
function startCoordinator(socketPath: string, joinTimeoutMs = 5_000) {
  const events: RestartEvent[] = [];
  const restart = runCoordinator({
    participants: [
      { id: 'root', pid: process.pid },
      { id: 'a', pid: 1 },
    ],
    socketPath,
    joinTimeoutMs,
    restoreSelf: () => {},
    onProgress: (event) => events.push(event),
  });
  restart.catch(() => {}); // inspected by each test
  return { restart, events };
}

async function waitForListening(events: RestartEvent[]): Promise<void> {
  while (!events.some((e) => e.type === 'listening')) await new Promise((r) => setTimeout(r, 5));
}

test('the documented exchange: join, turn, done, done', async (t) => {
  const run = newRun('protocol-happy');
  t.after(() => run.cleanUp());
  const socketPath = join(run.workDir, 'restart.sock');
  const { restart, events } = startCoordinator(socketPath);
  await waitForListening(events);

  const client = await rawClient(socketPath);
  client.send(JSON.stringify({ type: 'join', id: 'a', pid: 1 }));
  assert.deepEqual(await client.next(), { type: 'turn' });
  client.send(JSON.stringify({ type: 'done', id: 'a' }));
  assert.deepEqual(await client.next(), { type: 'done' });
  await client.closed;

  const report = await restart;
  assert.deepEqual(report.order, ['root', 'a']);
  assert.deepEqual(report.joinOrder, ['a']);
  assert.deepEqual(
    events.map((e) => e.type),
    ['listening', 'joined', 'turn', 'restored', 'turn', 'restored'],
  );
});

test('joins that are refused with EINVAL, without failing the restart', async (t) => {
  const run = newRun('protocol-refused');
  t.after(() => run.cleanUp());
  const socketPath = join(run.workDir, 'restart.sock');
  const { restart, events } = startCoordinator(socketPath);
  await waitForListening(events);

  const refusals: Array<[string, RegExp]> = [
    [JSON.stringify({ type: 'join', id: 'stranger', pid: 1 }), /"stranger" is not a participant/],
    [JSON.stringify({ type: 'join', id: 'root', pid: 1 }), /"root" is not a participant/],
    [JSON.stringify({ type: 'join', id: 'a', pid: 77 }), /joined with pid 77 but its saved pid is 1/],
    [JSON.stringify({ type: 'done', id: 'a' }), /the first message must be a join/],
    [JSON.stringify({ type: 'join', id: 'a', pid: 'one' }), /the first message must be a join/],
    ['this is not json', /not JSON/],
  ];
  for (const [line, reason] of refusals) {
    const client = await rawClient(socketPath);
    client.send(line);
    const reply = await client.next();
    assert.equal(reply.type, 'abort', line);
    assert.equal(reply.code, 'EINVAL', line);
    assert.match(String(reply.message), reason);
    await client.closed;
  }

  // The real participant can still join, and the restart completes.
  const client = await rawClient(socketPath);
  client.send(JSON.stringify({ type: 'join', id: 'a', pid: 1 }));
  assert.deepEqual(await client.next(), { type: 'turn' });
  client.send(JSON.stringify({ type: 'done', id: 'a' }));
  assert.deepEqual(await client.next(), { type: 'done' });
  assert.deepEqual((await restart).order, ['root', 'a']);
});

for (const [name, line, reason] of [
  ['a second join', JSON.stringify({ type: 'join', id: 'a', pid: 1 }), /sent join out of turn/],
  ['done before its turn', JSON.stringify({ type: 'done', id: 'a' }), /sent done out of turn/],
  ['an unknown message', JSON.stringify({ type: 'hello' }), /not part of the protocol/],
  ['a line that is not JSON', '{"type":', /not JSON/],
  ['a line longer than 64 KiB', 'x'.repeat(70 * 1024), /longer than 65536 bytes/],
] as const) {
  test(`a joined participant that sends ${name} fails the restart with EINVAL, and is told so`, async (t) => {
    const run = newRun('protocol-violation');
    t.after(() => run.cleanUp());
    const socketPath = join(run.workDir, 'restart.sock');
    // Two saved participants, so the restart is still waiting for b when a misbehaves.
    const events: RestartEvent[] = [];
    const restart = runCoordinator({
      participants: [
        { id: 'root', pid: process.pid },
        { id: 'a', pid: 1 },
        { id: 'b', pid: process.ppid }, // alive (the test runner), never joins here
      ],
      socketPath,
      joinTimeoutMs: 5_000,
      restoreSelf: () => {},
      onProgress: (event) => events.push(event),
    });
    restart.catch(() => {});
    await waitForListening(events);

    const client = await rawClient(socketPath);
    client.send(JSON.stringify({ type: 'join', id: 'a', pid: 1 }));
    while (!events.some((e) => e.type === 'joined')) await new Promise((r) => setTimeout(r, 5));
    client.send(line);
    const reply = await client.next();
    assert.equal(reply.type, 'abort');
    assert.equal(reply.code, 'EINVAL');
    await assert.rejects(restart, (err: unknown) => isAgentError(err, 'EINVAL') && reason.test(err.message));
    await client.closed;
  });
}

// The participant's side, against a coordinator played by hand: a plain server that records what the
// participant sends and answers as the test says.
async function handPlayedCoordinator(socketPath: string) {
  const server = createServer();
  const received: Array<Record<string, unknown>> = [];
  let connection: Socket | undefined;
  const connected = new Promise<Socket>((resolve) =>
    server.once('connection', (socket) => {
      connection = socket;
      socket.setEncoding('utf8');
      let pending = '';
      socket.on('data', (chunk: string) => {
        pending += chunk;
        let i: number;
        while ((i = pending.indexOf('\n')) >= 0) {
          received.push(JSON.parse(pending.slice(0, i)) as Record<string, unknown>);
          pending = pending.slice(i + 1);
        }
      });
      socket.on('error', () => {});
      resolve(socket);
    }),
  );
  server.listen(socketPath);
  await once(server, 'listening');
  const until = async (count: number): Promise<void> => {
    while (received.length < count) await new Promise((r) => setTimeout(r, 5));
  };
  const close = (): void => {
    connection?.destroy();
    server.close();
  };
  return { connected, received, until, close };
}

test('participant side: join, restore in its turn, done, and resolve only on the final done', async (t) => {
  const run = newRun('participant-happy');
  t.after(() => run.cleanUp());
  const socketPath = join(run.workDir, 'restart.sock');
  const coordinator = await handPlayedCoordinator(socketPath);
  t.after(() => coordinator.close());
  let restored = 0;
  let settled = false;
  const joined = joinRestart({ socketPath, id: 'a', restore: () => void (restored += 1) }).finally(() => (settled = true));

  const socket = await coordinator.connected;
  await coordinator.until(1);
  assert.deepEqual(coordinator.received[0], { type: 'join', id: 'a', pid: process.pid });
  assert.equal(restored, 0, 'no restore before the turn');
  socket.write('{"type":"turn"}\n');
  await coordinator.until(2);
  assert.deepEqual(coordinator.received[1], { type: 'done', id: 'a' });
  assert.equal(restored, 1);
  await new Promise((r) => setTimeout(r, 50));
  assert.equal(settled, false, 'restored, but the restart is not complete yet');
  socket.write('{"type":"done"}\n');
  await joined;
});

test('participant side: interrupted by its own AbortSignal, it tells the coordinator and rejects with EINTR', async (t) => {
  const run = newRun('participant-abort');
  t.after(() => run.cleanUp());
  const socketPath = join(run.workDir, 'restart.sock');
  const coordinator = await handPlayedCoordinator(socketPath);
  t.after(() => coordinator.close());
  const controller = new AbortController();
  const joined = joinRestart({ socketPath, id: 'a', restore: () => {}, signal: controller.signal });
  await coordinator.until(1);
  controller.abort('shutting down');
  await assert.rejects(joined, (err: unknown) => isAgentError(err, 'EINTR') && /shutting down/.test(err.message));
  await coordinator.until(2);
  assert.equal(coordinator.received[1]!.type, 'abort');
  assert.equal(coordinator.received[1]!.code, 'EINTR');
});

test('participant side: the coordinator hanging up without a word is ESRCH', async (t) => {
  const run = newRun('participant-hangup');
  t.after(() => run.cleanUp());
  const socketPath = join(run.workDir, 'restart.sock');
  const coordinator = await handPlayedCoordinator(socketPath);
  t.after(() => coordinator.close());
  const joined = joinRestart({ socketPath, id: 'a', restore: () => {} });
  (await coordinator.connected).destroy();
  await assert.rejects(
    joined,
    (err: unknown) => isAgentError(err, 'ESRCH') && /coordinator went away while participant a was waiting/.test(err.message),
  );
});

test('participant side: no coordinator ever listening is ESRCH after the connect timeout', async (t) => {
  const run = newRun('participant-alone');
  t.after(() => run.cleanUp());
  const started = performance.now();
  await assert.rejects(
    joinRestart({ socketPath: join(run.workDir, 'nobody.sock'), id: 'a', restore: () => {}, connectTimeoutMs: 200 }),
    (err: unknown) => isAgentError(err, 'ESRCH') && /no coordinator listening/.test(err.message),
  );
  assert.ok(performance.now() - started < 2_000);
});

test("the coordinator's own restore fails: the joined participant is released with that error", async (t) => {
  const run = newRun('protocol-self-fails');
  t.after(() => run.cleanUp());
  const socketPath = join(run.workDir, 'restart.sock');
  const events: RestartEvent[] = [];
  const restart = runCoordinator({
    participants: [
      { id: 'root', pid: process.pid },
      { id: 'a', pid: 1 },
    ],
    socketPath,
    restoreSelf: () => {
      throw new AgentError('ECRIU', 'criu restore of the root tree failed');
    },
    onProgress: (event) => events.push(event),
  });
  restart.catch(() => {});
  await waitForListening(events);
  const client = await rawClient(socketPath);
  client.send(JSON.stringify({ type: 'join', id: 'a', pid: 1 }));
  assert.deepEqual(await client.next(), { type: 'abort', code: 'ECRIU', message: 'criu restore of the root tree failed' });
  await assert.rejects(restart, (err: unknown) => isAgentError(err, 'ECRIU'));
});

test('a participant that reports abort fails the restart with its code', async (t) => {
  const run = newRun('protocol-participant-aborts');
  t.after(() => run.cleanUp());
  const socketPath = join(run.workDir, 'restart.sock');
  const { restart, events } = startCoordinator(socketPath);
  await waitForListening(events);
  const client = await rawClient(socketPath);
  client.send(JSON.stringify({ type: 'join', id: 'a', pid: 1 }));
  assert.deepEqual(await client.next(), { type: 'turn' });
  client.send(JSON.stringify({ type: 'abort', code: 'ENOSPC', message: 'no room to restore the page images' }));
  await assert.rejects(
    restart,
    (err: unknown) => isAgentError(err, 'ENOSPC') && err.message === 'restart: participant a failed: no room to restore the page images',
  );
});
