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
  return {
    onProgress(event) {
      const parts = [event.stage];
      if (event.tree !== undefined && event.trees !== undefined) parts.push(`tree ${event.tree}/${event.trees}`);
      if (event.bytes !== undefined) parts.push(bytes(event.bytes));
      if (event.message) parts.push(event.message);
      const width = (stream.columns ?? 80) - 1;
      stream.write(`\r\x1b[2K${parts.join('  ').slice(0, width)}`);
      shown = true;
    },
    done() {
      if (shown) stream.write('\r\x1b[2K');
      shown = false;
    },
  };
}
