// flock(2) through koffi. Node has no flock of its own; koffi is a maintained FFI with prebuilt
// binaries, and a real kernel flock is what makes the lock honoured by `flock -n FILE cmd` and
// dropped by the kernel when the holder dies. Only the non-blocking form is used, so a call never
// stalls the event loop.

import koffi from 'koffi';
import { AgentError } from '../errors/index.js';

const LOCK_EX = 2;
const LOCK_NB = 4;
const LOCK_UN = 8;
const EWOULDBLOCK = koffi.os.errno.EWOULDBLOCK ?? 11;
const EINTR = koffi.os.errno.EINTR ?? 4;

type FlockFn = (fd: number, operation: number) => number;
let flockFn: FlockFn | undefined;

function libcFlock(): FlockFn {
  flockFn ??= koffi.load('libc.so.6').func('int flock(int fd, int op)') as FlockFn;
  return flockFn;
}

function call(fd: number, operation: number): { ok: true } | { ok: false; errno: number } {
  for (;;) {
    if (libcFlock()(fd, operation) === 0) return { ok: true };
    const errno = koffi.errno();
    if (errno !== EINTR) return { ok: false, errno };
  }
}

/** Tries to take an exclusive lock on fd without waiting: true if taken, false if someone holds it. */
export function tryLockExclusive(fd: number, what: string): boolean {
  const result = call(fd, LOCK_EX | LOCK_NB);
  if (result.ok) return true;
  if (result.errno === EWOULDBLOCK) return false;
  throw new AgentError('EIO', `flock(LOCK_EX|LOCK_NB) on ${what} failed: errno ${result.errno}`);
}

export function unlock(fd: number, what: string): void {
  const result = call(fd, LOCK_UN);
  if (!result.ok) throw new AgentError('EIO', `flock(LOCK_UN) on ${what} failed: errno ${result.errno}`);
}
