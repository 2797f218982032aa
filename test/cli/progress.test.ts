// The progress line's formatting: pure logic, tested without a terminal. A terminal reporting 0
// columns (script(1), some CI) is given by a stand-in stream with columns 0, as such a terminal
// shows itself to Node.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { progressFor, progressText } from '../../src/cli/progress.js';

test('0 columns: every progress line is whole (no last character cut)', () => {
  assert.equal(progressText({ stage: 'preflight' }, 0), 'preflight');
  assert.equal(progressText({ stage: 'done' }, 0), 'done');
  assert.equal(progressText({ stage: 'dump', tree: 1, trees: 2, bytes: 2048 }, 0), 'dump  tree 1/2  2.0 KiB');
  assert.equal(progressText({ stage: 'policy', message: 'after: thawed' }, 1), 'policy  after: thawed');
});

test('a known width: the line is cut one short of it, so the cursor never wraps', () => {
  assert.equal(progressText({ stage: 'policy', message: 'after: thawed' }, 10), 'policy  a');
  assert.equal(progressText({ stage: 'done' }, 5), 'done');
  assert.equal(progressText({ stage: 'done' }, 4), 'don');
  assert.equal(progressText({ stage: 'x'.repeat(100) }, undefined), 'x'.repeat(79), 'no width reported: 80');
});

test('progressFor on a TTY of 0 columns writes the whole stage names, then erases the line', () => {
  const written: string[] = [];
  const stream = { isTTY: true, columns: 0, write: (s: string) => written.push(s) } as unknown as NodeJS.WriteStream;
  const progress = progressFor(false, stream);
  progress.onProgress!({ stage: 'preflight' });
  progress.onProgress!({ stage: 'done' });
  progress.done();
  assert.deepEqual(written, ['\r\x1b[2Kpreflight', '\r\x1b[2Kdone', '\r\x1b[2K']);
});
