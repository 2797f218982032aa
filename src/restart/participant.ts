// One participant of a multi-process restart: join the coordinator, wait for the turn, restore,
// report done, and wait until the coordinator says the whole restart is complete. Resolving only
// then means a participant never claims success for a restart that failed after its own step.

import { connect, type Socket } from 'node:net';
import { setTimeout as sleep } from 'node:timers/promises';
import { AgentError, systemErrno } from '../errors/index.js';
import { asAgentError, watchInterruptions, type Interruption } from './interruption.js';
import { abortMessage, errorFromAbort, parseCoordinatorMessage, readLines, send } from './protocol.js';
import { validateFunction, validateSocketPath, validateTimeout } from './saved-order.js';

const DEFAULT_CONNECT_TIMEOUT_MS = 10_000;
// Participants may be started before the coordinator has bound its socket (the tree is built first);
// like a task that enters restart before its coordinator, they wait for it, polling every 20 ms.
const CONNECT_RETRY_MS = 20;

export interface JoinOptions {
  socketPath: string;
  /** This participant's id in the saved array. */
  id: string;
  /** This participant's restore step, run in its turn. It should stop when the signal aborts. */
  restore: (signal: AbortSignal) => Promise<void> | void;
  /** How long to wait for the coordinator's socket to appear. Default 10 s. */
  connectTimeoutMs?: number;
  /** A bound on the whole wait. Default: none (the coordinator bounds it). */
  timeoutMs?: number;
  signal?: AbortSignal;
}

/** One connection attempt; an interruption while it is pending destroys the socket it was making. */
function connectOnce(socketPath: string, signal: AbortSignal): Promise<Socket> {
  return new Promise<Socket>((resolve, reject) => {
    const socket = connect(socketPath);
    const onAbort = (): void => {
      socket.destroy();
      reject(signal.reason);
    };
    const settle = (): void => {
      signal.removeEventListener('abort', onAbort);
      socket.off('error', onError);
    };
    const onError = (err: Error): void => {
      settle();
      reject(err);
    };
    socket.once('connect', () => {
      settle();
      resolve(socket);
    });
    socket.once('error', onError);
    if (signal.aborted) onAbort();
    else signal.addEventListener('abort', onAbort, { once: true });
  });
}

async function connectToCoordinator(socketPath: string, connectTimeoutMs: number, signal: AbortSignal): Promise<Socket> {
  const deadline = performance.now() + connectTimeoutMs;
  for (;;) {
    try {
      return await connectOnce(socketPath, signal);
    } catch (err) {
      if (signal.aborted) throw signal.reason;
      const errno = systemErrno(err);
      if (errno === 'ECONNRESET' || errno === 'EPIPE') {
        // The coordinator closed its socket with this connection still waiting to be accepted: it
        // has finished or failed, and is gone.
        throw new AgentError('ESRCH', `restart: the coordinator at ${socketPath} went away before accepting the connection (${errno})`);
      }
      if (errno !== 'ENOENT' && errno !== 'ECONNREFUSED') throw asAgentError(err, 'EIO', `failed to connect to ${socketPath}`);
      if (performance.now() >= deadline) {
        throw new AgentError('ESRCH', `restart: no coordinator listening at ${socketPath} after ${connectTimeoutMs} ms (${errno})`);
      }
    }
    await sleep(CONNECT_RETRY_MS, undefined, { signal }).catch(() => {
      throw signal.reason;
    });
  }
}

/** Follows the coordinator's messages on a joined connection until the restart completes or fails. */
function followCoordinator(socket: Socket, id: string, restore: JoinOptions['restore'], interruption: Interruption): Promise<void> {
  return new Promise<void>((resolve, reject) => {
    let state: 'waiting' | 'restoring' | 'restored' = 'waiting';
    let settled = false;
    const settle = (err?: AgentError): void => {
      settled = true;
      interruption.signal.removeEventListener('abort', onInterrupted);
      if (err) reject(err);
      else resolve();
      socket.end();
    };
    // An interruption on this side (our signal, our timeout, our restore step failing) is told to
    // the coordinator, which then releases everybody else with the same error.
    const onInterrupted = (): void => {
      const err = interruption.signal.reason as AgentError;
      send(socket, abortMessage(err));
      settle(err);
    };
    interruption.signal.addEventListener('abort', onInterrupted, { once: true });

    const runRestore = async (): Promise<void> => {
      state = 'restoring';
      try {
        await restore(interruption.signal);
      } catch (err) {
        interruption.fail(asAgentError(err, 'EIO', `participant ${id} failed to restore`));
        return;
      }
      if (interruption.signal.aborted) return;
      state = 'restored';
      send(socket, { type: 'done', id });
    };

    readLines(
      socket,
      (value) => {
        if (interruption.signal.aborted) return;
        const message = parseCoordinatorMessage(value);
        if (message?.type === 'turn' && state === 'waiting') {
          void runRestore();
        } else if (message?.type === 'done' && state === 'restored') {
          settle();
        } else if (message?.type === 'abort') {
          // Released by the coordinator: stop our own restore step, and do not answer.
          interruption.signal.removeEventListener('abort', onInterrupted);
          interruption.fail(errorFromAbort(message));
          settle(interruption.signal.reason as AgentError);
        } else {
          const what = message ? `${message.type} while ${state}` : 'a message that is not part of the protocol';
          interruption.fail(new AgentError('EINVAL', `restart: participant ${id} got ${what} from the coordinator`));
        }
      },
      (err) => interruption.fail(err),
    );
    socket.on('error', () => {}); // handled as the close that follows
    socket.on('close', () => {
      if (settled || interruption.signal.aborted) return;
      interruption.signal.removeEventListener('abort', onInterrupted);
      interruption.fail(new AgentError('ESRCH', `restart: the coordinator went away while participant ${id} was ${state}`));
      settle(interruption.signal.reason as AgentError);
    });
  });
}

/**
 * Joins a restart as participant `id` and takes part in it. Resolves once every participant has
 * restored; rejects with the error the restart failed with (the same one the coordinator sees).
 */
export async function joinRestart(options: JoinOptions): Promise<void> {
  if (typeof options !== 'object' || options === null) throw new AgentError('EINVAL', 'restart: options are required');
  const socketPath = validateSocketPath(options.socketPath);
  if (socketPath === undefined) throw new AgentError('EINVAL', 'restart: socketPath is required to join');
  if (typeof options.id !== 'string' || options.id.length === 0) throw new AgentError('EINVAL', 'restart: a participant needs an id');
  validateFunction('restore', options.restore);
  const connectTimeoutMs = validateTimeout('connectTimeoutMs', options.connectTimeoutMs) ?? DEFAULT_CONNECT_TIMEOUT_MS;
  const timeoutMs = validateTimeout('timeoutMs', options.timeoutMs);

  const interruption = watchInterruptions({ what: `restart of participant ${options.id}`, signal: options.signal, timeoutMs });
  let socket: Socket | undefined;
  try {
    socket = await connectToCoordinator(socketPath, connectTimeoutMs, interruption.signal);
    send(socket, { type: 'join', id: options.id, pid: process.pid });
    await followCoordinator(socket, options.id, options.restore, interruption);
  } finally {
    interruption.dispose();
    socket?.end();
  }
}
