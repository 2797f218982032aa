// Live progress of a checkpoint or restore, on a terminal only: one line on stderr, redrawn in place
// (stage, tree, bytes), erased when the operation ends. With --json or without a TTY, nothing.

import type { ProgressLine } from './client.js';
import { bytes } from './format.js';

export interface Progress {
  readonly onProgress?: (event: ProgressLine) => void;
  done(): void;
}

export function progressFor(json: boolean, stream: NodeJS.WriteStream = process.stderr): Progress {
  if (json || !stream.isTTY) return { done() {} };
  let shown = false;
  let finished = false;
  return {
    onProgress(event) {
      if (finished) return;
      const parts = [event.stage];
      if (event.tree !== undefined && event.trees !== undefined) parts.push(`tree ${event.tree}/${event.trees}`);
      if (event.bytes !== undefined) parts.push(bytes(event.bytes));
      if (event.message) parts.push(event.message);
      const width = (stream.columns ?? 80) - 1;
      stream.write(`\r\x1b[2K${parts.join('  ').slice(0, width)}`);
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
