// agentd's log: winston, one line per event on stderr. Human-readable `time level: message key=value`
// by default, or one JSON object per line. Under journald (JOURNAL_STREAM names our stderr) each event
// is a record of journald's native protocol instead (journal.ts): PRIORITY, so that
// `journalctl -u agentd -p warning` filters, and fields of its own (CGROUP=, REQUEST_ID=, PEER_UID=,
// AGENTD_ERROR=). Where that socket is missing, each stderr line starts with its syslog priority,
// `<3>` to `<7>`, which journald strips and stores as PRIORITY; journald stamps the time, so we leave
// it out there.
//
// Only JOURNAL_STREAM decides, not INVOCATION_ID or the socket's existence alone: every process a unit
// starts inherits INVOCATION_ID, and an agent a test starts from inside a service must keep writing
// the stderr its test reads.

import { existsSync, fstatSync } from 'node:fs';
import winston from 'winston';
import { JOURNAL_SOCKET, JournalSocket, journalStream, type JournalRecord } from './journal.js';

export const LOG_LEVELS = ['error', 'warn', 'info', 'debug'] as const;
export type LogLevel = (typeof LOG_LEVELS)[number];
export const LOG_FORMATS = ['text', 'json'] as const;
export type LogFormat = (typeof LOG_FORMATS)[number];

const SEVERITY: Record<LogLevel, number> = { error: 0, warn: 1, info: 2, debug: 3 };
const SYSLOG_PRIORITY: Record<LogLevel, number> = { error: 3, warn: 4, info: 6, debug: 7 };

export type Logger = Pick<winston.Logger, LogLevel | 'close'>;

export interface LoggerOptions {
  readonly level?: LogLevel;
  readonly format?: LogFormat;
  /** Defaults to process.stderr. */
  readonly stream?: NodeJS.WritableStream;
  /** Force journald's priority prefixes on or off; default: detected from JOURNAL_STREAM. */
  readonly journal?: boolean;
  /**
   * Send records to this journald socket (native protocol) instead of writing lines; default: the
   * system's journal socket when JOURNAL_STREAM names our stderr, `false` for lines.
   */
  readonly journalSocket?: string | false;
}

/**
 * Whether stderr is connected to journald. JOURNAL_STREAM is `DEVICE:INODE` of the stream systemd
 * connected; it can be inherited by processes whose stderr went elsewhere, so compare it with our fd 2.
 */
function stderrIsJournal(env: NodeJS.ProcessEnv = process.env): boolean {
  const value = env.JOURNAL_STREAM;
  if (!value) return false;
  const [dev, ino] = value.split(':');
  try {
    const st = fstatSync(2, { bigint: true });
    return String(st.dev) === dev && String(st.ino) === ino;
  } catch {
    return false;
  }
}

function keyValues(meta: Record<string, unknown>): string {
  const parts: string[] = [];
  for (const [key, value] of Object.entries(meta)) {
    if (value === undefined) continue;
    const text = typeof value === 'string' ? value : JSON.stringify(value);
    parts.push(`${key}=${/[\s"=]/.test(text) || text === '' ? JSON.stringify(text) : text}`);
  }
  return parts.length ? ' ' + parts.join(' ') : '';
}

function lineFormat(format: LogFormat, journal: boolean): winston.Logform.Format {
  return winston.format.printf((info) => {
    const { level, message, timestamp, ...meta } = info as Record<string | symbol, unknown> & { level: LogLevel; message: unknown };
    for (const sym of Object.getOwnPropertySymbols(meta)) delete meta[sym];
    const prefix = journal ? `<${SYSLOG_PRIORITY[level]}>` : '';
    if (format === 'json') {
      return prefix + JSON.stringify({ ...(journal ? {} : { time: timestamp }), level, message, ...meta });
    }
    const head = journal ? `${level}: ` : `${String(timestamp)} ${level}: `;
    return prefix + head + String(message) + keyValues(meta as Record<string, unknown>);
  });
}

/** A winston event as a journal record: its fields, and the line stderr gets if journald refuses it. */
function journalRecord(info: winston.Logform.TransformableInfo): JournalRecord {
  const { level, message, timestamp: _time, ...meta } = info as Record<string | symbol, unknown> & { level: LogLevel; message: unknown };
  const line = String(info[Symbol.for('message')] ?? message);
  for (const sym of Object.getOwnPropertySymbols(meta)) delete meta[sym];
  return {
    message: String(message) + keyValues(meta as Record<string, unknown>),
    priority: SYSLOG_PRIORITY[level],
    meta: meta as Record<string, unknown>,
    fallback: line,
  };
}

function nativeJournal(options: LoggerOptions): string | undefined {
  if (options.journalSocket !== undefined) return options.journalSocket || undefined;
  if (options.journal !== undefined || options.stream !== undefined) return undefined;
  return stderrIsJournal() && existsSync(JOURNAL_SOCKET) ? JOURNAL_SOCKET : undefined;
}

export function createLogger(options: LoggerOptions = {}): Logger {
  const native = nativeJournal(options);
  const journal = options.journal ?? (native !== undefined || stderrIsJournal());
  const format = options.format ?? 'text';
  const stream = native
    ? journalStream(new JournalSocket(native), journalRecord, options.stream ?? process.stderr)
    : (options.stream ?? process.stderr);
  const level = options.level ?? 'info';
  const logger = winston.createLogger({
    levels: SEVERITY,
    level,
    format: winston.format.combine(winston.format.timestamp(), lineFormat(format, journal)),
    transports: [new winston.transports.Stream({ stream })],
  });
  // winston stamps, formats and streams every event, and only then does the transport drop one below
  // its level: the debug line of every GET (api.ts) cost the agent ~5 % of its time at info level
  // under 8 clients of state requests (node --cpu-prof, docs/bench.md). The level is fixed at start,
  // so the quieter levels are made to return at once.
  for (const quieter of LOG_LEVELS) {
    if (SEVERITY[quieter] > SEVERITY[level]) (logger as unknown as Record<LogLevel, () => unknown>)[quieter] = () => logger;
  }
  return logger as unknown as Logger;
}
