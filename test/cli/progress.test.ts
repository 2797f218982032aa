// The progress line's formatting and rate: pure logic, tested without a terminal (the terminal
// itself is in progress-pty.test.ts). A terminal reporting 0 columns (script(1), some CI) is given
// by a stand-in stream with columns 0, as such a terminal shows itself to Node; time is a counter
// the test moves.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { progressFor, progressText, RateMeter, timeLeft } from '../../src/cli/progress.js';
import type { ProgressLine } from '../../src/cli/client.js';

const MiB = 1 << 20;

function tty(columns: number | undefined, written: string[]): NodeJS.WriteStream {
  return { isTTY: true, columns, write: (s: string) => written.push(s) } as unknown as NodeJS.WriteStream;
}

test('0 columns: every progress line is whole (no last character cut)', () => {
  assert.equal(progressText({ stage: 'preflight' }, 0), 'preflight');
  assert.equal(progressText({ stage: 'done' }, 0), 'done');
  assert.equal(progressText({ stage: 'dump', tree: 1, trees: 2, bytes: 2048 }, 0), 'dump  tree 1/2  2.0 KiB');
  assert.equal(progressText({ stage: 'policy', message: 'after: thawed' }, 1), 'policy  after: thawed');
  assert.equal(
    progressText({ stage: 'dump', tree: 1, trees: 1, bytes: 100 * MiB, total: 400 * MiB }, 0, { bytesPerSecond: 50 * MiB, secondsLeft: 6 }),
    'dump  tree 1/1  100 MiB of 400 MiB (25%)  50 MiB/s  6 s left',
  );
});

test('a known width: the line is cut one short of it, so the cursor never wraps', () => {
  assert.equal(progressText({ stage: 'policy', message: 'after: thawed' }, 10), 'policy  a');
  assert.equal(progressText({ stage: 'done' }, 5), 'done');
  assert.equal(progressText({ stage: 'done' }, 4), 'don');
  assert.equal(progressText({ stage: 'x'.repeat(100) }, undefined), 'x'.repeat(79), 'no width reported: 80');
});

test('bytes of a total: the percentage is floored and never over 100', () => {
  assert.equal(progressText({ stage: 'verify', bytes: 999, total: 1000 }, 0), 'verify  999 B of 1000 B (99%)');
  assert.equal(progressText({ stage: 'dump', bytes: 2 * MiB, total: MiB }, 0), 'dump  2.0 MiB of 1.0 MiB (100%)');
  assert.equal(progressText({ stage: 'import', bytes: 10, total: 0 }, 0), 'import  10 B', 'a total of 0 says nothing');
});

test('time left reads in seconds, minutes, hours', () => {
  assert.equal(timeLeft(0.2), '1 s');
  assert.equal(timeLeft(59), '59 s');
  assert.equal(timeLeft(185), '3 min 05 s');
  assert.equal(timeLeft(7620), '2 h 07 min');
});

test('the rate: none for the first half second of a stage, then bytes over the last 3 s; a new stage starts afresh', () => {
  const meter = new RateMeter();
  const at = (bytes: number, ms: number, stage = 'dump') => meter.observe({ stage, bytes, total: 100 * MiB } as ProgressLine, ms);
  assert.equal(at(0, 0), undefined);
  assert.equal(at(5 * MiB, 400), undefined, 'under 500 ms');
  assert.deepEqual(at(10 * MiB, 1000), { bytesPerSecond: 10 * MiB, secondsLeft: 9 });
  at(20 * MiB, 2000);
  at(30 * MiB, 3000);
  at(40 * MiB, 4000);
  // the samples older than 3 s are dropped: 4000..5000 ms at 40 MiB/s, 1000..5000 at 20 MiB/s in all
  const r = at(80 * MiB, 5000)!;
  assert.ok(r.bytesPerSecond > 17.5 * MiB && r.bytesPerSecond < 20.1 * MiB, String(r.bytesPerSecond / MiB));
  assert.equal(at(1 * MiB, 5100, 'manifest'), undefined, 'a new stage');
  assert.equal(meter.observe({ stage: 'policy' }, 5200), undefined, 'no bytes, no rate');
});

test('progressFor on a TTY of 0 columns writes the whole stage names, then erases the line', () => {
  const written: string[] = [];
  const progress = progressFor(false, tty(0, written), { stdoutIsTTY: true });
  progress.onProgress!({ stage: 'preflight' });
  progress.onProgress!({ stage: 'done' });
  progress.done();
  assert.deepEqual(written, ['\r\x1b[2Kpreflight', '\r\x1b[2Kdone', '\r\x1b[2K']);
});

test('nothing is drawn when stdout is not a terminal, nor with --json, nor when stderr is not one', () => {
  const written: string[] = [];
  for (const progress of [
    progressFor(false, tty(80, written), { stdoutIsTTY: false }),
    progressFor(true, tty(80, written), { stdoutIsTTY: true }),
    progressFor(false, { isTTY: false, write: (s: string) => written.push(s) } as unknown as NodeJS.WriteStream, { stdoutIsTTY: true }),
  ]) {
    progress.onProgress?.({ stage: 'dump', bytes: 1, total: 2 });
    progress.done();
  }
  assert.deepEqual(written, []);
});

test('within a stage a redraw comes at most every 100 ms, with the rate once known; a new stage at once', () => {
  const written: string[] = [];
  let now = 0;
  const progress = progressFor(false, tty(0, written), { stdoutIsTTY: true, now: () => now });
  const dump = (bytes: number, ms: number) => {
    now = ms;
    progress.onProgress!({ stage: 'dump', tree: 1, trees: 1, bytes, total: 40 * MiB });
  };
  dump(0, 0);
  dump(MiB, 50); // not drawn
  dump(10 * MiB, 1000);
  now = 1010;
  progress.onProgress!({ stage: 'policy', message: 'after: prior' });
  progress.done();
  assert.deepEqual(written, [
    '\r\x1b[2Kdump  tree 1/1  0 B of 40 MiB (0%)',
    '\r\x1b[2Kdump  tree 1/1  10 MiB of 40 MiB (25%)  10 MiB/s  3 s left',
    '\r\x1b[2Kpolicy  after: prior',
    '\r\x1b[2K',
  ]);
});
