// Everything that can end a restart early, folded into one AbortSignal whose reason is the AgentError
// every participant is released with: the caller's AbortSignal (EINTR, or ETIMEDOUT for
// AbortSignal.timeout()), an overall timeout (ETIMEDOUT), a signal to this process (EINTR), or a
// failure found by the restart itself (ESRCH for a missing participant, a participant's own error).
// The first reason wins; later ones are ignored, so everybody sees the same error.

import { AgentError, isAgentError } from '../errors/index.js';

export interface Interruption {
  /** Aborted, with the AgentError as reason, when the run must stop. */
  readonly signal: AbortSignal;
  /** Stops the run with this error, unless it has already stopped. */
  fail(err: AgentError): void;
  /** Removes the timer and the listeners; call it when the run is over. */
  dispose(): void;
}

export interface InterruptionSources {
  /** What is running, for messages: "restart", "restore". */
  what: string;
  signal?: AbortSignal;
  timeoutMs?: number;
  /** Signals to this process that interrupt the run while it lasts. */
  processSignals?: readonly NodeJS.Signals[];
}

function fromAbortReason(what: string, reason: unknown): AgentError {
  if (isAgentError(reason)) return reason;
  if (reason instanceof Error && reason.name === 'TimeoutError') {
    return new AgentError('ETIMEDOUT', `${what} timed out: ${reason.message}`, { cause: reason });
  }
  const why = reason instanceof Error ? reason.message : reason === undefined ? 'cancelled' : String(reason);
  return new AgentError('EINTR', `${what} interrupted: ${why}`, { cause: reason });
}

export function watchInterruptions(sources: InterruptionSources): Interruption {
  const controller = new AbortController();
  const fail = (err: AgentError): void => {
    if (!controller.signal.aborted) controller.abort(err);
  };
  const cleanups: Array<() => void> = [];

  const external = sources.signal;
  if (external) {
    const onAbort = (): void => fail(fromAbortReason(sources.what, external.reason));
    if (external.aborted) onAbort();
    else {
      external.addEventListener('abort', onAbort, { once: true });
      cleanups.push(() => external.removeEventListener('abort', onAbort));
    }
  }
  if (sources.timeoutMs !== undefined) {
    const ms = sources.timeoutMs;
    const timer = setTimeout(() => fail(new AgentError('ETIMEDOUT', `${sources.what} did not finish within ${ms} ms`)), ms);
    cleanups.push(() => clearTimeout(timer));
  }
  for (const name of sources.processSignals ?? []) {
    // While a listener is installed, Node does not apply the signal's default action (exit): the
    // run ends with EINTR instead, and the caller decides whether to exit.
    const onSignal = (): void => fail(new AgentError('EINTR', `${sources.what} interrupted by ${name}`, { details: { signal: name } }));
    process.on(name, onSignal);
    cleanups.push(() => process.off(name, onSignal));
  }

  return {
    signal: controller.signal,
    fail,
    dispose: () => {
      for (const cleanup of cleanups.splice(0)) cleanup();
    },
  };
}

/** Settles like `promise`, or rejects with the signal's reason as soon as the signal aborts. */
export function unlessAborted<T>(promise: Promise<T>, signal: AbortSignal): Promise<T> {
  if (signal.aborted) {
    promise.catch(() => {}); // its outcome no longer matters; do not let it become unhandled
    return Promise.reject(signal.reason);
  }
  return new Promise<T>((resolve, reject) => {
    const onAbort = (): void => reject(signal.reason);
    signal.addEventListener('abort', onAbort, { once: true });
    promise.then(
      (value) => {
        signal.removeEventListener('abort', onAbort);
        resolve(value);
      },
      (err: unknown) => {
        signal.removeEventListener('abort', onAbort);
        reject(err);
      },
    );
  });
}

/** Any error as an AgentError: AgentErrors keep their code, anything else becomes `code`. */
export function asAgentError(err: unknown, code: AgentError['code'], context: string): AgentError {
  if (isAgentError(err)) return err;
  const why = err instanceof Error ? err.message : String(err);
  return new AgentError(code, `${context}: ${why}`, { cause: err });
}
