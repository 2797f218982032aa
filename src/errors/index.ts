// Errors are values with an errno-style code. Every layer throws AgentError; the daemon maps codes to
// HTTP statuses and the CLI to exit codes, each in one table (src/daemon/http-status.ts, src/cli/exit-codes.ts).

export const ERROR_CODES = [
  'EINVAL', // bad input: malformed path, request, option
  'ENOENT', // cgroup, checkpoint or file does not exist
  'EBUSY', // state conflict: CHECKPOINTING, frozen by parent, freeze in progress
  'ETIMEDOUT', // an operation did not finish in time
  'ENOSPC', // not enough room for an image
  'EACCES', // permission denied
  'ESRCH', // a process that should be there is not (restart ordering, restore)
  'EINTR', // an operation was interrupted (signal, cancellation)
  'ECRIU', // CRIU missing, failing its check, or a dump/restore failed
  'EINCONSISTENT', // a checkpoint whose cgroup did not stay stopped: the image is not good
  'EUNREACHABLE', // the agent cannot be reached (CLI side)
  'EIO', // anything else that went wrong talking to the kernel or the disk
] as const;

export type ErrorCode = (typeof ERROR_CODES)[number];

export class AgentError extends Error {
  readonly code: ErrorCode;
  readonly details?: Record<string, unknown>;

  constructor(code: ErrorCode, message: string, options: { cause?: unknown; details?: Record<string, unknown> } = {}) {
    super(message, { cause: options.cause });
    this.name = 'AgentError';
    this.code = code;
    this.details = options.details;
  }

  toJSON(): { code: ErrorCode; message: string; details?: Record<string, unknown> } {
    return this.details ? { code: this.code, message: this.message, details: this.details } : { code: this.code, message: this.message };
  }
}

export function isAgentError(err: unknown, code?: ErrorCode): err is AgentError {
  return err instanceof AgentError && (code === undefined || err.code === code);
}

export function isErrorCode(value: unknown): value is ErrorCode {
  return typeof value === 'string' && (ERROR_CODES as readonly string[]).includes(value);
}

/** The errno name of a Node system error (`ENOENT`, `EBUSY`...), or undefined. */
export function systemErrno(err: unknown): string | undefined {
  const code = (err as NodeJS.ErrnoException | null)?.code;
  return typeof code === 'string' ? code : undefined;
}

// Kernel errnos we see from cgroup and image files, folded into our codes. Anything else becomes EIO.
const SYSTEM_TO_AGENT: Record<string, ErrorCode> = {
  ENOENT: 'ENOENT',
  ENODEV: 'ENOENT', // a cgroup file whose cgroup was removed under an open fd
  ENOTDIR: 'ENOENT',
  EBUSY: 'EBUSY',
  EINVAL: 'EINVAL',
  EACCES: 'EACCES',
  EPERM: 'EACCES',
  ENOSPC: 'ENOSPC',
  EDQUOT: 'ENOSPC',
  ETIMEDOUT: 'ETIMEDOUT',
  ESRCH: 'ESRCH',
  EINTR: 'EINTR',
};

/**
 * Wraps a system error into an AgentError whose message names what was attempted, e.g.
 * `failed to write "FROZEN" to /sys/fs/cgroup/freezer/jobs/x/freezer.state: EBUSY`.
 */
export function fromSystemError(err: unknown, what: string): AgentError {
  if (err instanceof AgentError) return err;
  const errno = systemErrno(err);
  const code = (errno && SYSTEM_TO_AGENT[errno]) || 'EIO';
  const reason = errno ?? (err instanceof Error ? err.message : String(err));
  return new AgentError(code, `${what}: ${reason}`, { cause: err });
}
