// Ctrl-C during a checkpoint or restore. Leaving at once would leave the agent working for seconds
// (CRIU stopped, the cgroup put back) while the shell prompt says it is over; so the first Ctrl-C
// says what happens, asks the agent to cancel (POST /v1/operations/{id}/cancel) and waits for the
// operation's own answer; a second Ctrl-C leaves at once (exit 130; the agent still finishes the
// cancel, since a client that goes away cancels its operation too).

import { call, type ClientOptions } from './client.js';
import { isAgentError } from '../errors/index.js';

/** 128 + SIGINT, what a shell reports for a command ended by Ctrl-C. */
export const EXIT_INTERRUPTED = 130;

// The cancel request is small and the agent answers it at once; it must not wait as long as the operation.
const CANCEL_WAIT_MS = 10_000;

export interface Cancellable {
  /** The id to send as X-Request-Id with the operation. */
  readonly requestId: string;
  /** Whether Ctrl-C was pressed (the operation's answer is the answer to a cancel). */
  cancelled(): boolean;
  /** Awaits the operation with Ctrl-C handled as above; resolves or rejects with its answer. */
  run<T>(operation: Promise<T>): Promise<T>;
}

function say(text: string): void {
  process.stderr.write(`agentctl: ${text}\n`);
}

/**
 * `whatHappens` says what the agent does on a cancel ("putting v2:jobs/x back to THAWED"); it is
 * printed at once, before the agent is asked, so that the operator sees the Ctrl-C was taken.
 * `beforeMessage` runs first (it erases the progress line for good).
 */
export function cancellable(client: ClientOptions, whatHappens: () => string, beforeMessage: () => void): Cancellable {
  // 48 random bits tell one agentctl's request from another's; Math.random, not node:crypto, which
  // every agentctl start would load for this alone (docs/bench.md, "agentctl start-up").
  const requestId = `agentctl-${Math.floor(Math.random() * 2 ** 48)
    .toString(16)
    .padStart(12, '0')}`;
  let interrupted = false;
  const onSigint = () => {
    if (interrupted) {
      say('leaving now; the agent finishes the cancel on its own');
      process.exit(EXIT_INTERRUPTED);
    }
    interrupted = true;
    beforeMessage();
    say(`cancelling: ${whatHappens()}… (Ctrl-C again to leave at once)`);
    const path = `/v1/operations/${encodeURIComponent(requestId)}/cancel`;
    call({ socket: client.socket, timeoutMs: CANCEL_WAIT_MS }, 'POST', path).catch((err: unknown) => {
      // ENOENT: the operation had just ended and its answer is on its way. Anything else: leaving
      // closes the connection, which cancels the operation too.
      if (isAgentError(err, 'ENOENT')) return;
      say(
        `cannot ask the agent to cancel (${isAgentError(err) ? `${err.code}: ` : ''}${(err as Error).message}); leaving, which cancels it`,
      );
      process.exit(EXIT_INTERRUPTED);
    });
  };
  return {
    requestId,
    cancelled: () => interrupted,
    async run<T>(operation: Promise<T>): Promise<T> {
      process.on('SIGINT', onSigint);
      try {
        return await operation;
      } finally {
        process.off('SIGINT', onSigint);
      }
    },
  };
}
