// The one table from error codes to agentctl's exit status. Scripts branch on these numbers.
//
//   0 ok          1 other failure      2 invalid usage or input (EINVAL)   3 not found (ENOENT)
//   4 busy (EBUSY) 5 timed out (ETIMEDOUT) 6 agent unreachable            7 CRIU failed (ECRIU)
//
// EINCONSISTENT (the cgroup did not stay stopped during a checkpoint, so its image is not good) is 1,
// not 7: CRIU did its part; something else thawed the cgroup, and CRIU's logs will not explain it.

import type { ErrorCode } from '../errors/index.js';

const EXIT_FAILURE = 1;
export const EXIT_USAGE = 2;

export const EXIT_CODES: Readonly<Record<ErrorCode, number>> = {
  EINVAL: 2,
  ENOENT: 3,
  EBUSY: 4,
  ETIMEDOUT: 5,
  EUNREACHABLE: 6,
  ECRIU: 7,
  EINCONSISTENT: 1,
  ENOSPC: 1,
  EACCES: 1,
  ESRCH: 1,
  EINTR: 1,
  EIO: 1,
};

/** The exit status for an error code; a code this agentctl does not know is an "other failure". */
export function exitCodeFor(code: string): number {
  return (EXIT_CODES as Record<string, number>)[code] ?? EXIT_FAILURE;
}
