// One lock file name per cgroup, derived from its hierarchy and path, that can never name anything
// outside the locks directory and never collides with another cgroup's.
//
//   v2 jobs/build-42      -> v2-jobs%2Fbuild-42.lock
//   v1 a%b/ünï            -> v1-a%25b%2F%C3%BC%C3%B1%C3%AF.lock
//   a name over 255 bytes -> v2+sha256-<64 hex>.lock
//
// Every byte outside [A-Za-z0-9._-] is written as %XX (so '/' can never appear and the encoding is
// injective); the `v1-`/`v2-` prefix keeps the hierarchies apart and means a name is never `.` or
// `..`. Names too long for the filesystem (255 bytes) use a hash of `hierarchy:path`; the `+` that
// marks them is itself always escaped in the readable form, so the two forms cannot collide.

import { createHash } from 'node:crypto';
import type { CgroupRef } from '../cgroup/index.js';

export const LOCK_SUFFIX = '.lock';
const NAME_MAX = 255;
const UNSAFE_CHAR = /[^A-Za-z0-9._-]/gu;

function escapeChar(char: string): string {
  let out = '';
  for (const byte of Buffer.from(char, 'utf8')) out += `%${byte.toString(16).toUpperCase().padStart(2, '0')}`;
  return out;
}

// Per code point (the `u` flag), each unsafe one written as its UTF-8 bytes: the same bytes as
// escaping the whole path's UTF-8 byte by byte (a lone surrogate becomes EF BF BD either way), at a
// fraction of the cost for the usual path whose only unsafe character is '/': every lease and every
// status names several lock files (its own, each ancestor's).
function escapePath(path: string): string {
  return path.replace(UNSAFE_CHAR, escapeChar);
}

export function lockFileName(ref: Pick<CgroupRef, 'hierarchy' | 'path'>): string {
  const readable = `${ref.hierarchy}-${escapePath(ref.path)}${LOCK_SUFFIX}`;
  if (Buffer.byteLength(readable) <= NAME_MAX) return readable;
  const digest = createHash('sha256').update(`${ref.hierarchy}:${ref.path}`).digest('hex');
  return `${ref.hierarchy}+sha256-${digest}${LOCK_SUFFIX}`;
}

/**
 * The start every readable lock file name of a cgroup strictly below `ref` has: `v2-jobs%2F` for
 * v2 `jobs` (escaping is per byte, so a descendant's escaped path begins with the escaped
 * `path/`). Hashed names carry no path: their records say which cgroup they are for.
 */
export function descendantNamePrefix(ref: Pick<CgroupRef, 'hierarchy' | 'path'>): string {
  return `${ref.hierarchy}-${escapePath(ref.path + '/')}`;
}

/** Whether a lock file name is of the hashed form (a path too long to be written out). */
export function isHashedName(name: string): boolean {
  return /^v[12]\+sha256-/.test(name);
}
