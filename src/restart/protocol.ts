// The wire protocol between a restart coordinator and its participants.
//
// Channel: one Unix domain stream socket, bound by the coordinator (by default in a private 0700
// temporary directory). Each participant opens one connection. Every message is one JSON object on
// one line, terminated by "\n". Lines longer than MAX_LINE_BYTES are a protocol error.
//
// participant -> coordinator
//   {"type":"join","id":"<id>","pid":<pid>}                   first message: "I am here, waiting"
//   {"type":"done","id":"<id>"}                               my restore step finished (only in my turn)
//   {"type":"abort","code":"<ErrorCode>","message":"<text>"}  my restore step failed, or I was
//                                                             interrupted: the restart must fail
// coordinator -> participant
//   {"type":"turn"}                                           you are the active one: restore now
//   {"type":"done"}                                           everybody restored: the restart is complete
//   {"type":"abort","code":"<ErrorCode>","message":"<text>"}  the restart failed: stop waiting
//
// A participant's join is refused with an abort (EINVAL) when its id is not in the saved array, is the
// coordinator's, has already joined, or comes with another pid than the saved one.
// A closed connection is the same as a death: a participant whose connection closes before the
// restart is complete makes the restart fail with ESRCH; a coordinator whose connection closes
// releases its participants with ESRCH.

import type { Socket } from 'node:net';
import { AgentError, isErrorCode, type ErrorCode } from '../errors/index.js';

const MAX_LINE_BYTES = 64 * 1024;

export type ParticipantMessage =
  { type: 'join'; id: string; pid: number } | { type: 'done'; id: string } | { type: 'abort'; code: ErrorCode; message: string };

export type CoordinatorMessage = { type: 'turn' } | { type: 'done' } | { type: 'abort'; code: ErrorCode; message: string };

export function abortMessage(err: AgentError): { type: 'abort'; code: ErrorCode; message: string } {
  return { type: 'abort', code: err.code, message: err.message };
}

/** Writes one message; a socket that is already gone is ignored (its close is handled elsewhere). */
export function send(socket: Socket, message: ParticipantMessage | CoordinatorMessage): void {
  if (socket.destroyed || !socket.writable) return;
  socket.write(`${JSON.stringify(message)}\n`);
}

/**
 * Splits the byte stream of a socket into parsed JSON lines. A line that is not JSON, or too long,
 * is reported once through onError and the rest of the stream is ignored.
 */
export function readLines(socket: Socket, onMessage: (value: unknown) => void, onError: (err: AgentError) => void): void {
  let pending = '';
  let broken = false;
  const fail = (why: string): void => {
    broken = true;
    onError(new AgentError('EINVAL', `restart protocol: ${why}`));
  };
  const tooLong = (text: string): boolean => Buffer.byteLength(text) > MAX_LINE_BYTES;
  socket.setEncoding('utf8');
  socket.on('data', (chunk: string) => {
    if (broken) return;
    pending += chunk;
    let newline: number;
    while ((newline = pending.indexOf('\n')) >= 0) {
      const line = pending.slice(0, newline);
      pending = pending.slice(newline + 1);
      if (tooLong(line)) return fail(`a line is longer than ${MAX_LINE_BYTES} bytes`);
      if (line.trim() === '') continue;
      let value: unknown;
      try {
        value = JSON.parse(line);
      } catch {
        return fail(`a line is not JSON: ${JSON.stringify(line.slice(0, 80))}`);
      }
      onMessage(value);
      if (socket.destroyed) return;
    }
    if (tooLong(pending)) fail(`a line is longer than ${MAX_LINE_BYTES} bytes`);
  });
}

function isRecord(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

function parseAbort(value: Record<string, unknown>): { type: 'abort'; code: ErrorCode; message: string } | undefined {
  if (typeof value.message !== 'string') return undefined;
  // An unknown code from the other side still aborts; it is folded into EIO rather than dropped.
  return { type: 'abort', code: isErrorCode(value.code) ? value.code : 'EIO', message: value.message };
}

export function parseParticipantMessage(value: unknown): ParticipantMessage | undefined {
  if (!isRecord(value)) return undefined;
  switch (value.type) {
    case 'join':
      return typeof value.id === 'string' && Number.isSafeInteger(value.pid)
        ? { type: 'join', id: value.id, pid: value.pid as number }
        : undefined;
    case 'done':
      return typeof value.id === 'string' ? { type: 'done', id: value.id } : undefined;
    case 'abort':
      return parseAbort(value);
    default:
      return undefined;
  }
}

export function parseCoordinatorMessage(value: unknown): CoordinatorMessage | undefined {
  if (!isRecord(value)) return undefined;
  switch (value.type) {
    case 'turn':
      return { type: 'turn' };
    case 'done':
      return { type: 'done' };
    case 'abort':
      return parseAbort(value);
    default:
      return undefined;
  }
}

/** The error a participant or the coordinator reports when the other side says abort. */
export function errorFromAbort(message: { code: ErrorCode; message: string }): AgentError {
  return new AgentError(message.code, message.message);
}
