// agentd's log: winston, one line per event on stderr. Human-readable `time level: message key=value`
// by default, or one JSON object per line. Under journald (JOURNAL_STREAM names our stderr) each line
// starts with its syslog priority, `<3>` to `<7>`, which journald strips and stores as PRIORITY, so
// `journalctl -u agentd -p warning` filters; journald stamps the time, so we leave it out there.

import { fstatSync } from 'node:fs';
import winston from 'winston';

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

export function createLogger(options: LoggerOptions = {}): Logger {
  const journal = options.journal ?? stderrIsJournal();
  const format = options.format ?? 'text';
  return winston.createLogger({
    levels: SEVERITY,
    level: options.level ?? 'info',
    format: winston.format.combine(winston.format.timestamp(), lineFormat(format, journal)),
    transports: [new winston.transports.Stream({ stream: options.stream ?? process.stderr })],
  }) as unknown as Logger;
}
