// The ordering core shared by the multi-process coordinator and restoreInOrder: exactly one
// participant is active at a time, in saved order, and the next one is activated only once the
// previous one has finished. A failed or interrupted turn stops the sequence: nobody after it starts.

import type { AgentError } from '../errors/index.js';
import { asAgentError, type Interruption } from './interruption.js';

export interface TurnsOutcome {
  /** The ids whose turn finished, in the order they finished. */
  finished: string[];
  /** The turn that failed or was interrupted (or was about to start when the interruption came). */
  failure?: { id: string; position: number; error: AgentError };
}

/**
 * Runs `takeTurn` for each id in order. `takeTurn` gets the interruption's signal and should settle
 * soon after it aborts. A turn that throws stops the run through `interruption.fail`, so whoever
 * else watches the interruption sees the same error.
 */
export async function takeTurnsInOrder(
  ids: readonly string[],
  takeTurn: (id: string, position: number, signal: AbortSignal) => Promise<void>,
  interruption: Interruption,
): Promise<TurnsOutcome> {
  const finished: string[] = [];
  for (const [position, id] of ids.entries()) {
    if (!interruption.signal.aborted) {
      try {
        await takeTurn(id, position, interruption.signal);
        finished.push(id);
        continue;
      } catch (err) {
        interruption.fail(asAgentError(err, 'EIO', `${id} failed in its turn`));
      }
    }
    return { finished, failure: { id, position, error: interruption.signal.reason as AgentError } };
  }
  // An interruption that came during the last turn, after it finished, is too late to matter:
  // everybody is restored.
  return { finished };
}
