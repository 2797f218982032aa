// journald's native protocol (systemd.journal-fields(7), "Native Journal Protocol"): one datagram
// per record to /run/systemd/journal/socket, each field `KEY=value\n`, or, for a value holding a
// newline, `KEY\n`, its length as a 64-bit little-endian number, the bytes, `\n`. Through this,
// unlike the stream journald reads from stderr, a record carries fields of its own: CGROUP=,
// REQUEST_ID=, PEER_UID=, AGENTD_ERROR= can be searched (`journalctl -u agentd CGROUP=v2:jobs/x`).
// journald still attributes each record to agentd.service, from the sender's credentials.
// Node's dgram has no AF_UNIX, hence libc through koffi, as for sd_notify (notify.ts).

import { Writable } from 'node:stream';
import { AF_UNIX, SOCK_CLOEXEC, SOCK_DGRAM, libc, unixAddress } from './libc.js';

export const JOURNAL_SOCKET = '/run/systemd/journal/socket';

/** Well below the socket's send buffer (net.core.wmem_default, 208 KiB by default); longer values are cut. */
const MAX_VALUE_BYTES = 48 * 1024;

/** Log fields with a name of their own in the journal; every other one becomes AGENTD_<NAME>. */
const FIELD_NAMES: Record<string, string> = {
  cgroup: 'CGROUP',
  request: 'REQUEST_ID',
  uid: 'PEER_UID',
  code: 'AGENTD_ERROR',
};

/** A journal field name for a log key: upper case, `_` for anything else, never a leading `_` (trusted fields). */
export function fieldName(key: string): string {
  const named = FIELD_NAMES[key];
  if (named) return named;
  const upper = key
    .replace(/([a-z0-9])([A-Z])/g, '$1_$2')
    .toUpperCase()
    .replace(/[^A-Z0-9_]/g, '_');
  return `AGENTD_${upper}`.slice(0, 64);
}

/** One record's fields; `outcome` other than ok is the error code (AGENTD_ERROR=EBUSY). */
export function journalFields(message: string, priority: number, meta: Record<string, unknown>): [string, string][] {
  const fields: [string, string][] = [
    ['MESSAGE', message],
    ['PRIORITY', String(priority)],
    ['SYSLOG_IDENTIFIER', 'agentd'],
  ];
  for (const [key, value] of Object.entries(meta)) {
    if (value === undefined || value === null) continue;
    const text = typeof value === 'string' ? value : JSON.stringify(value);
    if (key === 'outcome') {
      if (text !== 'ok') fields.push(['AGENTD_ERROR', text]);
      continue;
    }
    fields.push([fieldName(key), text]);
  }
  return fields;
}

/** The datagram for a record (the native protocol's two forms of a field). */
export function encodeRecord(fields: readonly [string, string][]): Buffer {
  const parts: Buffer[] = [];
  for (const [name, value] of fields) {
    let bytes = Buffer.from(value);
    if (bytes.length > MAX_VALUE_BYTES) bytes = bytes.subarray(0, MAX_VALUE_BYTES);
    if (!bytes.includes(0x0a)) {
      parts.push(Buffer.from(`${name}=`), bytes, Buffer.from('\n'));
    } else {
      const len = Buffer.alloc(8);
      len.writeBigUInt64LE(BigInt(bytes.length));
      parts.push(Buffer.from(`${name}\n`), len, bytes, Buffer.from('\n'));
    }
  }
  return Buffer.concat(parts);
}

/** Sends datagrams to journald on one socket kept open. Throws what sendto(2) said. */
export class JournalSocket {
  private fd = -1;
  private readonly address: { addr: Buffer; len: number };

  constructor(readonly path: string = JOURNAL_SOCKET) {
    this.address = unixAddress(path);
  }

  send(datagram: Buffer): void {
    const c = libc();
    if (this.fd < 0) {
      this.fd = c.socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
      if (this.fd < 0) throw new Error(`socket(AF_UNIX, SOCK_DGRAM): errno ${c.errno()}`);
    }
    const sent = c.sendto(this.fd, datagram, datagram.length, 0, this.address.addr, this.address.len);
    if (sent < 0) throw new Error(`sendto ${this.path}: errno ${c.errno()}`);
  }

  close(): void {
    if (this.fd >= 0) libc().close(this.fd);
    this.fd = -1;
  }
}

/** The record a log event becomes; `fallback` gets the line when journald cannot take it. */
export interface JournalRecord {
  readonly message: string;
  readonly priority: number;
  readonly meta: Record<string, unknown>;
  readonly fallback: string;
}

/**
 * An object-mode stream for winston's Stream transport: each record becomes one datagram; one that
 * journald refuses goes to stderr as a line instead, so nothing is lost silently.
 */
export function journalStream<T>(
  socket: JournalSocket,
  toRecord: (event: T) => JournalRecord,
  stderr: NodeJS.WritableStream = process.stderr,
): Writable {
  return new Writable({
    objectMode: true,
    write(event: T, _encoding, done) {
      const record = toRecord(event);
      try {
        socket.send(encodeRecord(journalFields(record.message, record.priority, record.meta)));
      } catch (err) {
        stderr.write(`${record.fallback} journal_error=${JSON.stringify((err as Error).message)}\n`);
      }
      done();
    },
    final(done) {
      socket.close();
      done();
    },
  });
}
