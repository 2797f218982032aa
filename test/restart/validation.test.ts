// Garbage in must not hang: a malformed saved array or option is rejected with EINVAL before any
// socket exists or any restore step runs.

import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { test } from 'node:test';
import fc from 'fast-check';
import { isAgentError } from '../../src/errors/index.js';
import { joinRestart, runCoordinator, validateParticipants, type Participant } from '../../src/restart/index.js';
import { newRun } from './helpers.js';

const me = process.pid;
const otherPid = (n: number): number => (me + n) % 4_000_000 || 1;

const malformed: Array<[string, unknown, RegExp, number?]> = [
  ['not an array', { id: 'root', pid: me }, /must be an array/],
  ['empty', [], /empty/],
  [
    'missing coordinator (first entry is another process)',
    [
      { id: 'a', pid: otherPid(1) },
      { id: 'root', pid: me },
    ],
    /coordinator is missing/,
  ],
  [
    'duplicate ids',
    [
      { id: 'root', pid: me },
      { id: 'a', pid: otherPid(1) },
      { id: 'a', pid: otherPid(2) },
    ],
    /#1 and #2 have the same id "a"/,
  ],
  [
    'duplicate pids',
    [
      { id: 'root', pid: me },
      { id: 'a', pid: otherPid(1) },
      { id: 'b', pid: otherPid(1) },
    ],
    /#1 and #2 have the same pid/,
  ],
  [
    'the coordinator pid twice',
    [
      { id: 'root', pid: me },
      { id: 'a', pid: me },
    ],
    /same pid/,
  ],
  [
    'negative pid',
    [
      { id: 'root', pid: me },
      { id: 'a', pid: -4 },
    ],
    /pid -4, which is not a positive integer/,
  ],
  [
    'zero pid',
    [
      { id: 'root', pid: me },
      { id: 'a', pid: 0 },
    ],
    /not a positive integer/,
  ],
  [
    'fractional pid',
    [
      { id: 'root', pid: me },
      { id: 'a', pid: 12.5 },
    ],
    /not a positive integer/,
  ],
  [
    'pid as a string',
    [
      { id: 'root', pid: me },
      { id: 'a', pid: '123' },
    ],
    /not a positive integer/,
  ],
  [
    'NaN pid',
    [
      { id: 'root', pid: me },
      { id: 'a', pid: Number.NaN },
    ],
    /not a positive integer/,
  ],
  ['missing id', [{ id: 'root', pid: me }, { pid: otherPid(1) }], /#1 has no id/],
  [
    'empty id',
    [
      { id: 'root', pid: me },
      { id: '', pid: otherPid(1) },
    ],
    /#1 has no id/,
  ],
  ['null entry', [{ id: 'root', pid: me }, null], /#1 is not an object/],
  ['negative count', [{ id: 'root', pid: me }], /count -1 is not a positive integer/, -1],
  ['fractional count', [{ id: 'root', pid: me }], /count 1.5 is not a positive integer/, 1.5],
  [
    'count that disagrees with the array',
    [
      { id: 'root', pid: me },
      { id: 'a', pid: otherPid(1) },
    ],
    /count says 3 but the array holds 2/,
    3,
  ],
];

for (const [name, participants, message, count] of malformed) {
  test(`rejects a malformed saved array up front: ${name}`, async (t) => {
    const run = newRun('validation');
    t.after(() => run.cleanUp());
    const socketPath = join(run.workDir, 'restart.sock');
    let restored = false;
    const attempt = runCoordinator({
      participants: participants as Participant[],
      count,
      socketPath,
      joinTimeoutMs: 60_000,
      restoreSelf: () => {
        restored = true;
      },
    });
    await assert.rejects(attempt, (err: unknown) => isAgentError(err, 'EINVAL') && message.test(err.message));
    assert.equal(existsSync(socketPath), false, 'no socket was created');
    assert.equal(restored, false, 'nothing was restored');
  });
}

test('rejects malformed options up front', async () => {
  const participants = [{ id: 'root', pid: me }];
  const restoreSelf = (): void => {};
  const bad: Array<Record<string, unknown>> = [
    { joinTimeoutMs: 0 },
    { joinTimeoutMs: -5 },
    { joinTimeoutMs: Number.NaN },
    { joinTimeoutMs: Number.POSITIVE_INFINITY },
    { joinTimeoutMs: '100' },
    { timeoutMs: -1 },
    { socketPath: '' },
    { socketPath: `/tmp/${'x'.repeat(120)}` },
    { restoreSelf: undefined },
    { interruptSignals: ['TERM'] },
    { interruptSignals: 'SIGTERM' },
  ];
  for (const override of bad) {
    await assert.rejects(
      runCoordinator({ participants, restoreSelf, ...override } as Parameters<typeof runCoordinator>[0]),
      (err: unknown) => isAgentError(err, 'EINVAL'),
      JSON.stringify(override),
    );
  }
  await assert.rejects(runCoordinator(undefined as never), (err: unknown) => isAgentError(err, 'EINVAL'));
});

test('a participant with malformed options is rejected before it connects', async () => {
  const restore = (): void => {};
  const bad: Array<Record<string, unknown>> = [
    { id: 'a', restore },
    { socketPath: '/tmp/x.sock', restore },
    { socketPath: '/tmp/x.sock', id: '', restore },
    { socketPath: '/tmp/x.sock', id: 'a' },
    { socketPath: '/tmp/x.sock', id: 'a', restore, timeoutMs: 0 },
    { socketPath: '/tmp/x.sock', id: 'a', restore, connectTimeoutMs: -1 },
  ];
  for (const options of bad) {
    await assert.rejects(joinRestart(options as never), (err: unknown) => isAgentError(err, 'EINVAL'), JSON.stringify(options));
  }
});

test('a coordinator alone (array of one) restores itself and is done', async () => {
  const order: string[] = [];
  const report = await runCoordinator({ participants: [{ id: 'root', pid: me }], restoreSelf: () => void order.push('root') });
  assert.deepEqual(report.order, ['root']);
  assert.deepEqual(order, ['root']);
  assert.equal(existsSync(report.socketPath), false, 'the socket and its private directory are removed');
});

// Arrays built from unique ids and pids with the coordinator first are accepted; the same arrays with
// one defect injected anywhere are rejected with EINVAL.
const validArray = fc
  .uniqueArray(fc.record({ id: fc.string({ minLength: 1, maxLength: 8 }), pid: fc.integer({ min: 1, max: 4_000_000 }) }), {
    maxLength: 60,
    selector: (p) => p.id,
  })
  // fast-check may build records without a prototype; the saved array is plain JSON objects.
  .map((rest) => rest.filter((p) => p.pid !== me && p.id !== 'coordinator').map((p) => ({ id: p.id, pid: p.pid })))
  .map((rest) => {
    const seen = new Set<number>();
    return [{ id: 'coordinator', pid: me }, ...rest.filter((p) => !seen.has(p.pid) && seen.add(p.pid))];
  });

test('property: well-formed arrays are accepted as they are', () => {
  fc.assert(
    fc.property(validArray, (participants) => {
      assert.deepEqual(validateParticipants(participants, { coordinatorPid: me, count: participants.length }), participants);
    }),
  );
});

type Defect = 'duplicate-id' | 'duplicate-pid' | 'bad-pid' | 'no-coordinator' | 'bad-count';

test('property: any defect injected into a well-formed array is rejected with EINVAL', () => {
  fc.assert(
    fc.property(
      validArray,
      fc.constantFrom<Defect>('duplicate-id', 'duplicate-pid', 'bad-pid', 'no-coordinator', 'bad-count'),
      fc.nat(),
      fc.oneof(fc.integer({ max: 0 }), fc.double({ noInteger: true }), fc.constant(Number.NaN)),
      (valid, defect, at, badNumber) => {
        const participants: unknown[] = valid.map((p) => ({ ...p }));
        const index = at % participants.length;
        let count: unknown = participants.length;
        switch (defect) {
          case 'duplicate-id':
            participants.splice(index + 1, 0, { id: valid[index]!.id, pid: 4_000_001 });
            count = participants.length;
            break;
          case 'duplicate-pid':
            participants.splice(index + 1, 0, { id: '\u0000dup', pid: valid[index]!.pid });
            count = participants.length;
            break;
          case 'bad-pid':
            participants[index] = { ...valid[index]!, pid: badNumber };
            break;
          case 'no-coordinator':
            participants.shift();
            if (participants.length === 0) participants.push({ id: 'other', pid: 4_000_001 });
            count = participants.length;
            break;
          case 'bad-count':
            count = at % 2 === 0 ? badNumber : participants.length + 1 + (at % 5);
            break;
        }
        assert.throws(
          () => validateParticipants(participants, { coordinatorPid: me, count }),
          (err: unknown) => isAgentError(err, 'EINVAL'),
        );
      },
    ),
    { numRuns: 300 },
  );
});
