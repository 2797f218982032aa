// Live progress of the long operations (checkpoint, restore, export, import), on a terminal only:
// one line on stderr, redrawn in place: the stage, the tree, bytes done of the expected total, the
// rate and the time left, erased when the operation ends. Nothing when stdout or stderr is not a
// terminal (output piped or redirected, a script), nor with --json. Written here rather than with a
// progress-bar library: one line of text is all it draws, and its tests pin that line exactly.

import type { ProgressLine } from './client.js';
import { bytes } from './format.js';

/** What the rate meter says of a stage's bytes, when it has seen enough of them. */
export interface RateEstimate {
  readonly bytesPerSecond: number;
  /** Seconds until the total is reached at that rate; absent without a total. */
  readonly secondsLeft?: number;
}

export interface Progress {
  readonly onProgress?: (event: ProgressLine) => void;
  done(): void;
}

export interface ProgressOptions {
  /** Whether stdout is a terminal (default: process.stdout's word). */
  readonly stdoutIsTTY?: boolean;
  /** Milliseconds, for the rate (default: performance.now). */
  readonly now?: () => number;
}

// The rate is taken over the last RATE_WINDOW_MS of a stage, and shown once the stage has run for
// RATE_AFTER_MS: the first bytes of a stage (a file's first piece) say little of the rest.
const RATE_WINDOW_MS = 3000;
const RATE_AFTER_MS = 500;
// Redraws at most this often within a stage; a new stage is drawn at once.
const REDRAW_MS = 100;

/**
 * The progress line for a terminal `columns` wide, cut one short of the width so that the cursor
 * never wraps. A terminal that reports a width of 0 (under script(1) and some CI runners) gets the
 * whole line: cutting at 0 - 1 took off its last character ("prefligh"). One that reports none is
 * taken to be 80 wide.
 */
export function progressText(event: ProgressLine, columns: number | undefined, rate?: RateEstimate): string {
  const parts = [event.stage];
  if (event.tree !== undefined && event.trees !== undefined) parts.push(`tree ${event.tree}/${event.trees}`);
  if (event.bytes !== undefined) {
    if (event.total !== undefined && event.total > 0) {
      const percent = Math.min(100, Math.floor((100 * event.bytes) / event.total));
      parts.push(`${bytes(event.bytes)} of ${bytes(event.total)} (${percent}%)`);
    } else parts.push(bytes(event.bytes));
  }
  if (rate) {
    parts.push(`${bytes(Math.round(rate.bytesPerSecond))}/s`);
    if (rate.secondsLeft !== undefined) parts.push(`${timeLeft(rate.secondsLeft)} left`);
  }
  if (event.message) parts.push(event.message);
  const line = parts.join('  ');
  const width = columns ?? 80;
  return width > 1 ? line.slice(0, width - 1) : line;
}

/** "0 s", "42 s", "3 min 05 s", "2 h 07 min". */
export function timeLeft(seconds: number): string {
  const s = Math.max(0, Math.ceil(seconds));
  if (s < 60) return `${s} s`;
  if (s < 3600) return `${Math.floor(s / 60)} min ${String(s % 60).padStart(2, '0')} s`;
  return `${Math.floor(s / 3600)} h ${String(Math.floor((s % 3600) / 60)).padStart(2, '0')} min`;
}

/** Bytes over time within one stage: a new stage (or bytes going back) starts it afresh. */
export class RateMeter {
  private stage: string | undefined;
  private startedAt = 0;
  private samples: { at: number; bytes: number }[] = [];

  /** Adds what the event says at `at` ms; the estimate, once there is one. */
  observe(event: ProgressLine, at: number): RateEstimate | undefined {
    if (event.bytes === undefined) return undefined;
    const last = this.samples[this.samples.length - 1];
    if (event.stage !== this.stage || (last && event.bytes < last.bytes)) {
      this.stage = event.stage;
      this.startedAt = at;
      this.samples = [];
    }
    this.samples.push({ at, bytes: event.bytes });
    while (this.samples.length > 2 && at - this.samples[1].at >= RATE_WINDOW_MS) this.samples.shift();
    const first = this.samples[0];
    const elapsed = at - first.at;
    if (at - this.startedAt < RATE_AFTER_MS || elapsed <= 0 || event.bytes <= first.bytes) return undefined;
    const bytesPerSecond = ((event.bytes - first.bytes) * 1000) / elapsed;
    const left = event.total !== undefined ? Math.max(0, event.total - event.bytes) : undefined;
    return { bytesPerSecond, ...(left !== undefined ? { secondsLeft: left / bytesPerSecond } : {}) };
  }
}

export function progressFor(json: boolean, stream: NodeJS.WriteStream = process.stderr, options: ProgressOptions = {}): Progress {
  const stdoutIsTTY = options.stdoutIsTTY ?? !!process.stdout.isTTY;
  if (json || !stream.isTTY || !stdoutIsTTY) return { done() {} };
  const now = options.now ?? (() => performance.now());
  const meter = new RateMeter();
  let shown = false;
  let finished = false;
  let drawnStage: string | undefined;
  let drawnAt = -Infinity;
  return {
    onProgress(event) {
      if (finished) return;
      const at = now();
      const rate = meter.observe(event, at);
      if (event.stage === drawnStage && at - drawnAt < REDRAW_MS) return;
      drawnStage = event.stage;
      drawnAt = at;
      stream.write(`\r\x1b[2K${progressText(event, stream.columns, rate)}`);
      shown = true;
    },
    // Erases the line for good: after a Ctrl-C the stages still arriving must not redraw over what
    // agentctl says about the cancel.
    done() {
      if (shown) stream.write('\r\x1b[2K');
      shown = false;
      finished = true;
    },
  };
}
