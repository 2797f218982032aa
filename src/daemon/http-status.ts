// The one table from error codes to HTTP statuses. The body always carries the code itself, so
// clients (agentctl) branch on the code, never on the status; the status is for HTTP tooling.

import { AgentError, isAgentError, type ErrorCode } from '../errors/index.js';

export const HTTP_STATUS: Readonly<Record<ErrorCode, number>> = {
  EINVAL: 400, // Bad Request: malformed path, body, option
  EACCES: 403, // Forbidden
  ENOENT: 404, // Not Found: cgroup, checkpoint, route
  EBUSY: 409, // Conflict: CHECKPOINTING, frozen by parent, another operation holds the lock
  ESRCH: 409, // Conflict: a process the operation needs is gone (or a pid it needs is taken)
  EINCONSISTENT: 409, // Conflict: the cgroup did not stay stopped, the image is not good
  EINTR: 503, // Service Unavailable: cancelled, e.g. by the agent shutting down
  ETIMEDOUT: 504, // Gateway Timeout: the kernel or CRIU did not finish in time
  ENOSPC: 507, // Insufficient Storage: no room for the image
  ECRIU: 500, // Internal Server Error: CRIU missing, failing its check, or its dump/restore failed
  EIO: 500, // Internal Server Error: anything else
  EUNREACHABLE: 502, // Bad Gateway: never sent by agentd itself (agentctl's code for "no agent")
};

/**
 * Errors of the HTTP exchange itself rather than of an operation: they carry a code from the table
 * (EINVAL or ENOENT) but a more precise status, e.g. 413 for an oversized body.
 */
export class ProtocolError extends AgentError {
  readonly status: number;
  readonly headers: Record<string, string>;

  constructor(status: number, code: ErrorCode, message: string, headers: Record<string, string> = {}) {
    super(code, message);
    this.status = status;
    this.headers = headers;
  }
}

/** The status and the JSON error body for anything thrown while handling a request. */
export function errorResponse(err: unknown): {
  status: number;
  body: { error: { code: ErrorCode; message: string; details?: Record<string, unknown> } };
  headers: Record<string, string>;
} {
  if (err instanceof ProtocolError) {
    return { status: err.status, body: { error: { code: err.code, message: err.message } }, headers: err.headers };
  }
  const agentError = isAgentError(err) ? err : new AgentError('EIO', `internal error: ${err instanceof Error ? err.message : String(err)}`);
  return { status: HTTP_STATUS[agentError.code], body: { error: agentError.toJSON() }, headers: {} };
}
