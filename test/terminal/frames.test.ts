// Pure logic of the attach protocol and the sessions, without a kernel: the frame codec (any split
// of the byte stream gives the same frames; an oversized frame is refused), sizes, and a session's
// replay buffer and ended record. The session gets a stand-in for the pty here, which is only a
// source of output and an exit: the real pty and CRIU are in attach-api.test.ts and attach-cli.test.ts.

import assert from 'node:assert/strict';
import { test } from 'node:test';
import {
  EVENT,
  eventFrame,
  frame,
  FrameReader,
  INPUT,
  MAX_FRAME_BYTES,
  OUTPUT,
  parseSize,
  TerminalSession,
  TerminalSessions,
  type HeldTerminal,
  type TerminalClient,
} from '../../src/terminal/index.js';

test('frames: every split of the stream gives the same frames, in order', () => {
  const frames = [
    frame(INPUT, 'ls -l\r'),
    frame(OUTPUT, Buffer.from([0, 1, 2, 255])),
    frame(INPUT),
    eventFrame({ type: 'closed', message: 'é' }),
  ];
  const stream = Buffer.concat(frames);
  for (let cut = 0; cut <= stream.length; cut++) {
    const got: [number, string][] = [];
    const reader = new FrameReader((type, payload) => got.push([type, payload.toString('hex')]));
    reader.push(stream.subarray(0, cut));
    reader.push(stream.subarray(cut));
    assert.deepEqual(got, [
      [INPUT, Buffer.from('ls -l\r').toString('hex')],
      [OUTPUT, '000102ff'],
      [INPUT, ''],
      [EVENT, Buffer.from(JSON.stringify({ type: 'closed', message: 'é' })).toString('hex')],
    ]);
  }
});

test('frames: a frame over the limit is refused from its header', () => {
  const header = Buffer.alloc(5);
  header.writeUInt8(INPUT, 0);
  header.writeUInt32BE(MAX_FRAME_BYTES + 1, 1);
  assert.throws(() => new FrameReader(() => undefined).push(header), /larger than the 1048576-byte limit/);
});

test('sizes: whole numbers from 1 to 10000, both', () => {
  assert.deepEqual(parseSize(80, 24), { cols: 80, rows: 24 });
  for (const [c, r] of [
    [0, 24],
    [80, 10_001],
    [80.5, 24],
    ['80', 24],
    [80, undefined],
  ])
    assert.equal(parseSize(c, r), undefined);
});

function standIn(): { terminal: HeldTerminal; print(text: string): void; exit(code: number): void } {
  let listener: ((d: string) => void) | undefined;
  let exit!: (e: { exitCode: number }) => void;
  const exited = new Promise<{ exitCode: number }>((r) => (exit = r));
  return {
    terminal: {
      pid: 4242,
      write: () => undefined,
      resize: () => undefined,
      onData: (l) => ((listener = l), { dispose: () => (listener = undefined) }),
      exited,
    },
    print: (text) => listener?.(text),
    exit: (code) => exit({ exitCode: code }),
  };
}

function recorder(who: string): TerminalClient & { frames: Buffer[]; closed: boolean } {
  const client = {
    who,
    frames: [] as Buffer[],
    closed: false,
    send: (d: Buffer) => client.frames.push(d),
    close: () => (client.closed = true),
  };
  return client;
}

test('a session replays at most the last 64 KiB of output; an ended job is remembered by its cgroup', async () => {
  const pty = standIn();
  const sessions = new TerminalSessions();
  const session = new TerminalSession(pty.terminal, { cols: 80, rows: 24 });
  pty.print('written before the restore answered\n');
  sessions.hold(session, 'jobs/x', 'v2');
  const line = `${'x'.repeat(1023)}\n`;
  for (let i = 0; i < 100; i++) pty.print(line);
  const client = recorder('one');
  sessions.get('jobs/x', 'v2').attach(client);
  const replayed: Buffer[] = [];
  new FrameReader((type, payload) => type === OUTPUT && replayed.push(payload)).push(Buffer.concat(client.frames));
  assert.equal(Buffer.concat(replayed).length, 64 * 1024);
  assert.doesNotMatch(Buffer.concat(replayed).toString(), /before the restore/);

  assert.throws(() => sessions.get('jobs/x', 'v2').attach(recorder('two')), /attached to one; detach there first/);
  pty.exit(0);
  await new Promise((r) => setImmediate(r));
  assert.ok(client.closed);
  assert.deepEqual(sessions.list(), []);
  assert.throws(() => sessions.get('jobs/x', 'v2'), /the job on v2:jobs\/x \(pid 4242\) ended .*, at \d{4}-/);
  assert.throws(() => sessions.get('jobs/y', 'v2'), /agentd holds no terminal for v2:jobs\/y/);
});
