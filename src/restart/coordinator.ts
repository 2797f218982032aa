// The coordinator of a multi-process restart: it owns the saved array and the socket, counts
// participants in, restores itself first, then gives the turn to exactly one participant at a time
// in saved order. Any failure (a participant missing or gone: ESRCH; an interruption: EINTR or
// ETIMEDOUT; a participant's own error) releases every connected participant with an abort carrying
// the same error, then rejects. See protocol.ts for the messages.

import { chmod, mkdtemp, rm } from 'node:fs/promises';
import { createServer, type Server, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { AgentError, fromSystemError, systemErrno } from '../errors/index.js';
import { readProcStat } from '../proc/index.js';
import { asAgentError, unlessAborted, watchInterruptions, type Interruption } from './interruption.js';
import { abortMessage, parseParticipantMessage, readLines, send, type CoordinatorMessage, type ParticipantMessage } from './protocol.js';
import { validateFunction, validateParticipants, validateSocketPath, validateTimeout, type Participant } from './saved-order.js';
import { takeTurnsInOrder } from './turns.js';

export const DEFAULT_JOIN_TIMEOUT_MS = 10_000;
const DEFAULT_INTERRUPT_SIGNALS: readonly NodeJS.Signals[] = ['SIGTERM', 'SIGINT'];
// How long a released participant gets to read its last message and hang up before its connection
// is cut. Participants hang up at once; this only bounds a wedged one.
const HANG_UP_GRACE_MS = 2_000;
const JOIN_LIVENESS_POLL_MS = 100;

export type RestartEvent =
  | { type: 'listening'; socketPath: string }
  | { type: 'joined'; id: string; pid: number; waitingFor: number }
  | { type: 'turn'; id: string; position: number }
  | { type: 'restored'; id: string; position: number };

export interface CoordinatorOptions {
  /** The saved array; the first entry is this process. */
  participants: Participant[];
  /** The participant count recorded with the array, if any; checked against the array. */
  count?: number;
  /** Where to listen. Default: restart.sock in a new private (0700) temporary directory. */
  socketPath?: string;
  /** The coordinator's own restore step, run after everybody joined and before anyone else. */
  restoreSelf: (signal: AbortSignal) => Promise<void> | void;
  /** How long participants have to join, counted from listening. Default 10 s. */
  joinTimeoutMs?: number;
  /** A bound on the whole restart. Default: none (the join timeout still applies). */
  timeoutMs?: number;
  signal?: AbortSignal;
  /** Signals to this process that interrupt the restart while it runs. Default SIGTERM, SIGINT. */
  interruptSignals?: readonly NodeJS.Signals[];
  onProgress?: (event: RestartEvent) => void;
}

export interface RestartReport {
  /** Ids in the order their restore finished: the coordinator first, then the saved order. */
  order: string[];
  /** Ids in the order they joined (the coordinator is not in it). */
  joinOrder: string[];
  socketPath: string;
  elapsedMs: number;
}

interface Member {
  participant: Participant;
  socket?: Socket;
}

class CoordinatorSession {
  private readonly server: Server = createServer();
  private readonly sockets = new Set<Socket>();
  private readonly members = new Map<string, Member>();
  readonly joinOrder: string[] = [];
  private waitingFor: number;
  private everybodyJoined!: () => void;
  readonly allJoined = new Promise<void>((resolve) => (this.everybodyJoined = resolve));
  private activeTurn?: { id: string; finish: () => void };
  private complete = false;

  constructor(
    participants: Participant[],
    private readonly interruption: Interruption,
    private readonly onProgress: (event: RestartEvent) => void,
  ) {
    for (const participant of participants.slice(1)) this.members.set(participant.id, { participant });
    this.waitingFor = this.members.size;
    if (this.waitingFor === 0) this.everybodyJoined();
    this.server.on('connection', (socket) => this.accept(socket));
    this.server.on('error', (err) => interruption.fail(fromSystemError(err, 'restart socket failed')));
  }

  async listen(socketPath: string): Promise<void> {
    await new Promise<void>((resolve, reject) => {
      this.server.once('error', reject);
      this.server.listen(socketPath, () => {
        this.server.off('error', reject);
        resolve();
      });
    }).catch((err: unknown) => {
      if (systemErrno(err) === 'EADDRINUSE') {
        throw new AgentError('EBUSY', `failed to listen on ${socketPath}: EADDRINUSE (another restart, or a stale socket)`, { cause: err });
      }
      throw fromSystemError(err, `failed to listen on ${socketPath}`);
    });
  }

  missing(): string[] {
    return [...this.members.values()].filter((m) => !m.socket).map((m) => m.participant.id);
  }

  /** A participant that has not joined yet and whose process no longer exists: it never will. */
  goneBeforeJoining(): Participant | undefined {
    return [...this.members.values()].find((m) => !m.socket && !isAlive(m.participant.pid))?.participant;
  }

  private accept(socket: Socket): void {
    this.sockets.add(socket);
    let member: Member | undefined;
    socket.on('error', () => {}); // a reset connection is handled as its close
    socket.on('close', () => {
      this.sockets.delete(socket);
      if (member && !this.complete) {
        const { id, pid } = member.participant;
        this.interruption.fail(new AgentError('ESRCH', `restart: participant ${id} (pid ${pid}) went away before the restart completed`));
      }
    });
    readLines(
      socket,
      (value) => {
        const message = parseParticipantMessage(value);
        if (member) this.handle(member, message);
        else member = this.admit(socket, message);
      },
      (err) => {
        if (member) this.interruption.fail(new AgentError('EINVAL', `${err.message} (from ${member.participant.id})`));
        else this.refuse(socket, err.message);
      },
    );
  }

  /** The first message of a connection must be a join for a saved participant that has not joined. */
  private admit(socket: Socket, message: ParticipantMessage | undefined): Member | undefined {
    if (this.interruption.signal.aborted) {
      this.hangUp(socket, abortMessage(this.interruption.signal.reason as AgentError));
      return undefined;
    }
    if (message?.type !== 'join') return this.refuse(socket, 'the first message must be a join');
    const member = this.members.get(message.id);
    if (!member) return this.refuse(socket, `${JSON.stringify(message.id)} is not a participant of this restart`);
    if (member.socket) return this.refuse(socket, `${message.id} has already joined`);
    if (member.participant.pid !== message.pid) {
      return this.refuse(socket, `${message.id} joined with pid ${message.pid} but its saved pid is ${member.participant.pid}`);
    }
    member.socket = socket;
    this.joinOrder.push(message.id);
    this.waitingFor -= 1;
    this.onProgress({ type: 'joined', id: message.id, pid: message.pid, waitingFor: this.waitingFor });
    if (this.waitingFor === 0) this.everybodyJoined();
    return member;
  }

  private handle(member: Member, message: ParticipantMessage | undefined): void {
    const { id } = member.participant;
    if (message?.type === 'done' && message.id === id && this.activeTurn?.id === id) {
      this.activeTurn.finish();
    } else if (message?.type === 'abort') {
      this.interruption.fail(new AgentError(message.code, `restart: participant ${id} failed: ${message.message}`));
    } else {
      const what = message ? `${message.type} out of turn` : 'a message that is not part of the protocol';
      this.interruption.fail(new AgentError('EINVAL', `restart: participant ${id} sent ${what}`));
    }
  }

  private refuse(socket: Socket, why: string): undefined {
    this.hangUp(socket, { type: 'abort', code: 'EINVAL', message: `restart: join refused: ${why}` });
    return undefined;
  }

  private hangUp(socket: Socket, message: CoordinatorMessage): void {
    send(socket, message);
    socket.end();
    setTimeout(() => socket.destroy(), HANG_UP_GRACE_MS).unref();
  }

  /** One participant's turn: wake exactly it, and wait for its done. */
  async activate(id: string, position: number, signal: AbortSignal): Promise<void> {
    const { participant, socket } = this.members.get(id)!;
    if (!socket || socket.destroyed || !isAlive(participant.pid)) {
      throw new AgentError('ESRCH', `restart: participant ${id} (pid ${participant.pid}) is gone when its turn comes`);
    }
    const finished = new Promise<void>((finish) => (this.activeTurn = { id, finish }));
    this.onProgress({ type: 'turn', id, position });
    send(socket, { type: 'turn' });
    try {
      await unlessAborted(finished, signal);
    } finally {
      this.activeTurn = undefined;
    }
  }

  /** Sends everybody connected the final word (done, or abort) and waits until they hung up. */
  async release(message: CoordinatorMessage): Promise<void> {
    this.complete = message.type === 'done';
    const closed = [...this.sockets].map(
      (socket) =>
        new Promise<void>((resolve) => {
          socket.once('close', () => resolve());
          this.hangUp(socket, message);
        }),
    );
    this.server.close();
    await Promise.all(closed);
  }
}

// kill(pid, 0) tells whether the pid exists without signalling it (EPERM: it exists, not ours to
// signal). A zombie still has its pid but has exited: /proc says so with state Z.
function isAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
  } catch (err) {
    if (systemErrno(err) !== 'EPERM') return false;
  }
  const state = readProcStat(pid)?.state;
  return state !== undefined && state !== 'Z';
}

async function makePrivateDir(): Promise<string> {
  const dir = await mkdtemp(join(tmpdir(), 'agentd-restart-'));
  await chmod(dir, 0o700); // mkdtemp already uses 0700; say it where it matters
  return dir;
}

function validateSignals(value: unknown): readonly NodeJS.Signals[] {
  if (value === undefined) return DEFAULT_INTERRUPT_SIGNALS;
  if (!Array.isArray(value) || !value.every((s) => typeof s === 'string' && /^SIG[A-Z0-9]+$/.test(s))) {
    throw new AgentError('EINVAL', 'restart: interruptSignals must be an array of signal names such as SIGTERM');
  }
  return value as NodeJS.Signals[];
}

/** The countdown: resolves when every participant has joined; ESRCH when one cannot. */
async function awaitEverybody(
  session: CoordinatorSession,
  expected: number,
  joinTimeoutMs: number,
  interruption: Interruption,
): Promise<void> {
  // Node cannot wait for a pid that is not its child to exit, so the countdown also polls the saved
  // pids of those not yet joined: a participant that died before joining fails the restart with
  // ESRCH at once instead of at the join timeout. 100 ms of latency, a few syscalls per poll.
  const livenessPoll = setInterval(() => {
    const gone = session.goneBeforeJoining();
    if (gone) interruption.fail(new AgentError('ESRCH', `restart: participant ${gone.id} (pid ${gone.pid}) is gone before joining`));
  }, JOIN_LIVENESS_POLL_MS);
  const joinTimer = setTimeout(() => {
    const missing = session.missing();
    const list = missing.join(', ');
    const message = `restart: ${missing.length} of ${expected} participants did not join within ${joinTimeoutMs} ms: ${list}`;
    interruption.fail(new AgentError('ESRCH', message, { details: { missing } }));
  }, joinTimeoutMs);
  try {
    await unlessAborted(session.allJoined, interruption.signal);
  } finally {
    clearInterval(livenessPoll);
    clearTimeout(joinTimer);
  }
}

/**
 * Runs a restart as its coordinator. Everything is validated before the socket is opened (EINVAL).
 * Resolves when every participant has restored, in saved order; rejects with the error every
 * participant was released with.
 */
export async function runCoordinator(options: CoordinatorOptions): Promise<RestartReport> {
  const started = performance.now();
  if (typeof options !== 'object' || options === null) throw new AgentError('EINVAL', 'restart: options are required');
  const participants = validateParticipants(options.participants, { coordinatorPid: process.pid, count: options.count });
  validateFunction('restoreSelf', options.restoreSelf);
  const joinTimeoutMs = validateTimeout('joinTimeoutMs', options.joinTimeoutMs) ?? DEFAULT_JOIN_TIMEOUT_MS;
  const timeoutMs = validateTimeout('timeoutMs', options.timeoutMs);
  const requestedPath = validateSocketPath(options.socketPath);
  const processSignals = validateSignals(options.interruptSignals);
  const onProgress = options.onProgress ?? (() => {});

  const interruption = watchInterruptions({ what: 'restart', signal: options.signal, timeoutMs, processSignals });
  const session = new CoordinatorSession(participants, interruption, onProgress);
  let privateDir: string | undefined;
  try {
    if (!requestedPath) privateDir = await makePrivateDir();
    const socketPath = requestedPath ?? join(privateDir!, 'restart.sock');
    await session.listen(socketPath);
    onProgress({ type: 'listening', socketPath });

    await awaitEverybody(session, participants.length - 1, joinTimeoutMs, interruption);

    const coordinatorId = participants[0]!.id;
    const outcome = await takeTurnsInOrder(
      participants.map((p) => p.id),
      async (id, position, signal) => {
        if (position === 0) {
          onProgress({ type: 'turn', id, position });
          await unlessAborted(
            Promise.resolve().then(() => options.restoreSelf(signal)),
            signal,
          ).catch((err: unknown) => {
            throw asAgentError(err, 'EIO', `restart: the coordinator ${coordinatorId} failed to restore itself`);
          });
        } else {
          await session.activate(id, position, signal);
        }
        onProgress({ type: 'restored', id, position });
      },
      interruption,
    );
    if (outcome.failure) throw outcome.failure.error;
    await session.release({ type: 'done' });
    return { order: outcome.finished, joinOrder: session.joinOrder, socketPath, elapsedMs: performance.now() - started };
  } catch (err) {
    const error = asAgentError(err, 'EIO', 'restart failed');
    interruption.fail(error);
    const final = interruption.signal.reason as AgentError;
    await session.release(abortMessage(final));
    throw final;
  } finally {
    interruption.dispose();
    if (privateDir) await rm(privateDir, { recursive: true, force: true });
  }
}
