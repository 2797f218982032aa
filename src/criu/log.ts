// Reading what went wrong out of a CRIU log. Success is judged by CRIU's exit code, never by the
// log: every run on this kind of host prints one harmless "Error" line (RLIMIT_NOFILE, below).

import { open } from 'node:fs/promises';
import type { ErrorCode } from '../errors/index.js';

// A -v4 log is ~100 KB for a small tree but grows with the number of pages and files. The errors
// that matter are at the end, so read at most this much from the tail.
const LOG_TAIL_BYTES = 4 << 20;

// Printed by every dump and restore when CRIU cannot raise its own fd limit (a container limit).
const HARMLESS = [/rlimit: Can't setup RLIMIT_NOFILE/];

// "(00.123456) Error (criu/cr-dump.c:2111): Dumping FAILED." and, from restored tasks,
// "(00.134177)  11237: Error (criu/files-reg.c:2175): ...".
const ERROR_LINE = /\bError \(/;
const TIMESTAMP = /^\(\d+\.\d+\)\s*/;

/** The last LOG_TAIL_BYTES of a log, or undefined if it cannot be read (no log was written). */
export async function readLogTail(path: string): Promise<string | undefined> {
  let handle;
  try {
    handle = await open(path, 'r');
  } catch {
    return undefined;
  }
  try {
    const { size } = await handle.stat();
    const length = Math.min(size, LOG_TAIL_BYTES);
    const buffer = Buffer.alloc(length);
    await handle.read(buffer, 0, length, size - length);
    return buffer.toString('utf8');
  } catch {
    return undefined;
  } finally {
    await handle.close();
  }
}

/** The meaningful error lines of a CRIU log (or of its stderr), timestamps stripped. */
export function criuErrorLines(text: string): string[] {
  return text
    .split('\n')
    .filter((line) => ERROR_LINE.test(line) && !HARMLESS.some((re) => re.test(line)))
    .map((line) => line.replace(TIMESTAMP, '').trim());
}

/**
 * What CRIU printed on stderr (normally nothing: -o takes the log; but a log it cannot create, or an
 * images directory it cannot open, is reported there): its error lines, else every non-empty line.
 */
export function stderrLines(text: string): string[] {
  const errors = criuErrorLines(text);
  if (errors.length > 0) return errors;
  return text
    .split('\n')
    .map((line) => line.replace(TIMESTAMP, '').trim())
    .filter((line) => line !== '' && !HARMLESS.some((re) => re.test(line)));
}

/** ENOSPC when the failure was a full disk or quota (CRIU leaves partial images then), else ECRIU. */
export function failureCode(text: string): ErrorCode {
  return /No space left on device|Disk quota exceeded/.test(text) ? 'ENOSPC' : 'ECRIU';
}
