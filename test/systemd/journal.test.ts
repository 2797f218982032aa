// agentd's journald records (src/daemon/journal.ts): the native protocol's encoding, and a logger
// sending real datagrams to a socket this test binds in place of /run/systemd/journal/socket (the
// receiving end is journald's only on a systemd host; test/systemd/service.test.ts reads them back
// with journalctl there).

import { test, describe, after } from 'node:test';
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { PassThrough } from 'node:stream';
import { encodeRecord, fieldName, journalFields } from '../../src/daemon/journal.js';
import { createLogger } from '../../src/daemon/logging.js';
import { NotifyReceiver } from '../daemon/sockets.js';
import { Lab } from '../helpers/lab.js';

const lab = new Lab('journal');
after(() => lab.cleanup());

/** The fields of one datagram in the simple `KEY=value` form. */
function fieldsOf(datagram: string): Map<string, string> {
  return new Map(
    datagram
      .split('\n')
      .filter(Boolean)
      .map((l) => [l.slice(0, l.indexOf('=')), l.slice(l.indexOf('=') + 1)] as [string, string]),
  );
}

describe('journald records', () => {
  test('field names: the request log keys by their journal names, others as AGENTD_*, never a leading _', () => {
    assert.equal(fieldName('cgroup'), 'CGROUP');
    assert.equal(fieldName('request'), 'REQUEST_ID');
    assert.equal(fieldName('uid'), 'PEER_UID');
    assert.equal(fieldName('code'), 'AGENTD_ERROR');
    assert.equal(fieldName('imagesDir'), 'AGENTD_IMAGES_DIR');
    assert.equal(fieldName('ms'), 'AGENTD_MS');
    assert.equal(fieldName('a-b'), 'AGENTD_A_B');
  });

  test('outcome ok adds nothing; any other outcome is AGENTD_ERROR', () => {
    assert.ok(!journalFields('m', 6, { outcome: 'ok' }).some(([k]) => k === 'AGENTD_ERROR'));
    assert.deepEqual(
      journalFields('m', 4, { outcome: 'EBUSY' }).find(([k]) => k === 'AGENTD_ERROR'),
      ['AGENTD_ERROR', 'EBUSY'],
    );
  });

  test('a value holding a newline takes the binary form: NAME, newline, 64-bit little-endian length, bytes, newline', () => {
    const datagram = encodeRecord([
      ['MESSAGE', 'two\nlines'],
      ['PRIORITY', '3'],
    ]);
    const expected = Buffer.concat([
      Buffer.from('MESSAGE\n'),
      Buffer.from([9, 0, 0, 0, 0, 0, 0, 0]),
      Buffer.from('two\nlines\n'),
      Buffer.from('PRIORITY=3\n'),
    ]);
    assert.deepEqual(datagram, expected);
  });

  test('a logger pointed at a journal socket sends one datagram per event, with its fields', async () => {
    const path = join(lab.tempDir('sock'), 'journal.sock');
    const receiver = new NotifyReceiver(path);
    const stderr = new PassThrough();
    let written = '';
    stderr.on('data', (d: Buffer) => (written += d.toString()));
    try {
      const logger = createLogger({ journalSocket: path, stream: stderr, level: 'debug' });
      logger.warn('thaw', { uid: 0, pid: 42, operation: 'thaw', cgroup: 'v2:jobs/x', outcome: 'EBUSY', status: 409, request: 'req-1' });
      logger.info('freeze', { cgroup: 'v2:jobs/x', outcome: 'ok', request: 'req-2' });
      const refused = fieldsOf(await receiver.waitFor('REQUEST_ID=req-1'));
      assert.equal(refused.get('PRIORITY'), '4');
      assert.equal(refused.get('CGROUP'), 'v2:jobs/x');
      assert.equal(refused.get('PEER_UID'), '0');
      assert.equal(refused.get('AGENTD_PID'), '42');
      assert.equal(refused.get('AGENTD_ERROR'), 'EBUSY');
      assert.equal(refused.get('AGENTD_STATUS'), '409');
      assert.equal(refused.get('SYSLOG_IDENTIFIER'), 'agentd');
      assert.match(refused.get('MESSAGE') ?? '', /^thaw uid=0 .*cgroup=v2:jobs\/x outcome=EBUSY/);
      const routine = fieldsOf(await receiver.waitFor('REQUEST_ID=req-2'));
      assert.equal(routine.get('PRIORITY'), '6');
      assert.equal(routine.has('AGENTD_ERROR'), false);
      assert.equal(written, '', 'nothing on stderr while journald takes the records');
    } finally {
      receiver.close();
    }
  });

  test('a record the socket refuses goes to stderr instead, saying why', async () => {
    const stderr = new PassThrough();
    let written = '';
    stderr.on('data', (d: Buffer) => (written += d.toString()));
    const logger = createLogger({ journalSocket: join(lab.tempDir('none'), 'missing.sock'), stream: stderr });
    logger.error('recovery failed', { cgroup: 'v1:jobs/y' });
    await new Promise((r) => setTimeout(r, 50));
    assert.match(written, /^<3>error: recovery failed cgroup=v1:jobs\/y journal_error="sendto .*missing\.sock: errno 2"$/m);
  });
});
