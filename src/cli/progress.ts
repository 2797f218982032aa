// Live progress of a checkpoint or restore, on a terminal only: one line on stderr, redrawn in place
// (stage, tree, bytes), erased when the operation ends. With --json or without a TTY, nothing.

import type { ProgressLine } from './client.js';
import { bytes } from './format.js';

export interface Progress {
  readonly onProgress?: (event: ProgressLine) => void;
  done(): void;
}

/**
 * The progress line for a terminal `columns` wide, cut one short of the width so that the cursor
 * never wraps. A terminal that reports a width of 0 (under script(1) and some CI runners) gets the
 * whole line: cutting at 0 - 1 took off its last character ("prefligh"). One that reports none is
 * taken to be 80 wide.
 */
export function progressText(event: ProgressLine, columns: number | undefined): string {
  const parts = [event.stage];
  if (event.tree !== undefined && event.trees !== undefined) parts.push(`tree ${event.tree}/${event.trees}`);
  if (event.bytes !== undefined) parts.push(bytes(event.bytes));
  if (event.message) parts.push(event.message);
  const line = parts.join('  ');
  const width = columns ?? 80;
  return width > 1 ? line.slice(0, width - 1) : line;
}

export function progressFor(json: boolean, stream: NodeJS.WriteStream = process.stderr): Progress {
  if (json || !stream.isTTY) return { done() {} };
  let shown = false;
  let finished = false;
  return {
    onProgress(event) {
      if (finished) return;
      stream.write(`\r\x1b[2K${progressText(event, stream.columns)}`);
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
