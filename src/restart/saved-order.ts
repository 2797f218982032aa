// The ordered array of participants recorded at checkpoint time, and its validation. Garbage in must
// not hang: everything here runs before a socket is opened or a participant is woken, and every
// problem is an EINVAL that names the entry.

import { AgentError } from '../errors/index.js';

/** One task of the checkpoint, as saved: a stable id and the pid it must have when it joins. */
export interface Participant {
  id: string;
  pid: number;
}

// The longest path a Linux sockaddr_un can hold (108 bytes including the terminating NUL).
const MAX_SOCKET_PATH_BYTES = 107;

function invalid(message: string): AgentError {
  return new AgentError('EINVAL', `restart: ${message}`);
}

/**
 * Checks the saved array. The first entry is the coordinator and must be this process (its pid is
 * coordinatorPid); ids and pids are unique; pids are positive integers. `count` is the number of
 * participants recorded next to the array, when the caller has one: it must match the array.
 */
export function validateParticipants(participants: unknown, options: { coordinatorPid: number; count?: unknown }): Participant[] {
  if (!Array.isArray(participants)) throw invalid('the participants must be an array');
  if (participants.length === 0) throw invalid('the participant array is empty: it needs at least the coordinator');
  if (options.count !== undefined) {
    const count = options.count;
    if (typeof count !== 'number' || !Number.isSafeInteger(count) || count < 1) {
      throw invalid(`the participant count ${String(count)} is not a positive integer`);
    }
    if (count !== participants.length) {
      throw invalid(`the participant count says ${count} but the array holds ${participants.length}`);
    }
  }
  const byId = new Map<string, number>();
  const byPid = new Map<number, number>();
  const checked: Participant[] = [];
  participants.forEach((entry: unknown, index) => {
    if (typeof entry !== 'object' || entry === null) throw invalid(`participant #${index} is not an object`);
    const { id, pid } = entry as Record<string, unknown>;
    if (typeof id !== 'string' || id.length === 0) throw invalid(`participant #${index} has no id`);
    if (typeof pid !== 'number' || !Number.isSafeInteger(pid) || pid < 1) {
      throw invalid(`participant #${index} (${id}) has pid ${String(pid)}, which is not a positive integer`);
    }
    const sameId = byId.get(id);
    if (sameId !== undefined) throw invalid(`participants #${sameId} and #${index} have the same id ${JSON.stringify(id)}`);
    const samePid = byPid.get(pid);
    if (samePid !== undefined) throw invalid(`participants #${samePid} and #${index} have the same pid ${pid}`);
    byId.set(id, index);
    byPid.set(pid, index);
    checked.push({ id, pid });
  });
  const first = checked[0]!;
  if (first.pid !== options.coordinatorPid) {
    throw invalid(
      `the coordinator is missing: the first participant (${first.id}, pid ${first.pid}) is not this process (pid ${options.coordinatorPid})`,
    );
  }
  return checked;
}

/** A timeout option: absent, or a positive finite number of milliseconds. */
export function validateTimeout(name: string, value: unknown): number | undefined {
  if (value === undefined) return undefined;
  if (typeof value !== 'number' || !Number.isFinite(value) || value <= 0) {
    throw invalid(`${name} must be a positive number of milliseconds, not ${String(value)}`);
  }
  return value;
}

export function validateSocketPath(value: unknown): string | undefined {
  if (value === undefined) return undefined;
  if (typeof value !== 'string' || value.length === 0) throw invalid('socketPath must be a non-empty string');
  if (Buffer.byteLength(value) > MAX_SOCKET_PATH_BYTES) {
    throw invalid(`socketPath ${value} is longer than the ${MAX_SOCKET_PATH_BYTES} bytes a Unix socket address holds`);
  }
  return value;
}

export function validateFunction(name: string, value: unknown): void {
  if (typeof value !== 'function') throw invalid(`${name} must be a function`);
}
