// Restoring a checkpoint that holds several process trees: the trees are restored one at a time in
// their saved order, with the same semantics as the multi-process coordinator (one active step,
// interruptible, the first failure stops everything). If a step fails, no later step starts and the
// steps already restored are undone, last restored first, so nothing half-restored is left behind.

import { AgentError } from '../errors/index.js';
import { asAgentError, watchInterruptions } from './interruption.js';
import { validateTimeout } from './saved-order.js';
import { takeTurnsInOrder } from './turns.js';

export interface RestoreStep {
  id: string;
  /** Restores this step (for a process tree: one CRIU restore). Should stop when the signal aborts. */
  restore: (signal: AbortSignal) => Promise<unknown>;
  /** Takes back a finished restore (for a process tree: kill it). */
  undo?: () => Promise<unknown> | unknown;
}

export interface RestoreInOrderOptions {
  signal?: AbortSignal;
  timeoutMs?: number;
  onProgress?: (event: { type: 'restoring' | 'restored' | 'undone'; id: string }) => void;
}

export interface RestoreInOrderReport {
  order: string[];
}

function validateSteps(steps: unknown): RestoreStep[] {
  const invalid = (message: string): AgentError => new AgentError('EINVAL', `restore in order: ${message}`);
  if (!Array.isArray(steps)) throw invalid('the steps must be an array');
  if (steps.length === 0) throw invalid('there is nothing to restore: the step array is empty');
  const seen = new Set<string>();
  steps.forEach((step: unknown, index) => {
    const { id, restore, undo } = (step ?? {}) as Partial<RestoreStep>;
    if (typeof id !== 'string' || id.length === 0) throw invalid(`step #${index} has no id`);
    if (seen.has(id)) throw invalid(`step id ${JSON.stringify(id)} appears twice`);
    seen.add(id);
    if (typeof restore !== 'function') throw invalid(`step ${id} has no restore function`);
    if (undo !== undefined && typeof undo !== 'function') throw invalid(`step ${id} has an undo that is not a function`);
  });
  return steps as RestoreStep[];
}

/**
 * Runs the steps in order. Unlike the coordinator waiting on another process, a step that is
 * interrupted is waited for until it settles (it got the signal): a restore that finishes anyway is
 * then undone with the others instead of being left running with nobody to kill it.
 */
export async function restoreInOrder(steps: RestoreStep[], options: RestoreInOrderOptions = {}): Promise<RestoreInOrderReport> {
  const checked = validateSteps(steps);
  const timeoutMs = validateTimeout('timeoutMs', options.timeoutMs);
  const onProgress = options.onProgress ?? (() => {});
  const byId = new Map(checked.map((step) => [step.id, step]));
  const interruption = watchInterruptions({ what: 'restore', signal: options.signal, timeoutMs });
  try {
    const outcome = await takeTurnsInOrder(
      checked.map((step) => step.id),
      async (id, _position, signal) => {
        onProgress({ type: 'restoring', id });
        await byId.get(id)!.restore(signal);
        onProgress({ type: 'restored', id });
      },
      interruption,
    );
    if (!outcome.failure) return { order: outcome.finished };

    const { id, position, error } = outcome.failure;
    const undone: string[] = [];
    const undoFailures: Array<{ id: string; message: string }> = [];
    for (const doneId of [...outcome.finished].reverse()) {
      const undo = byId.get(doneId)!.undo;
      if (!undo) continue;
      try {
        await undo();
        undone.push(doneId);
        onProgress({ type: 'undone', id: doneId });
      } catch (err) {
        undoFailures.push({ id: doneId, message: asAgentError(err, 'EIO', 'undo failed').message });
      }
    }
    const undid = undone.length > 0 ? `; undid ${undone.join(', ')}` : '';
    const notUndone = undoFailures.length > 0 ? `; could not undo ${undoFailures.map((f) => `${f.id} (${f.message})`).join(', ')}` : '';
    throw new AgentError(
      error.code,
      `restore failed at step ${id} (${position + 1} of ${checked.length}): ${error.message}${undid}${notUndone}`,
      {
        cause: error,
        details: {
          failedStep: id,
          restored: outcome.finished,
          undone,
          undoFailures,
          notStarted: checked.slice(position + 1).map((s) => s.id),
        },
      },
    );
  } finally {
    interruption.dispose();
  }
}
