// Strict request validation. Everything a request carries is checked before anything is done, so a
// bad request gets a 4xx and changes nothing: a body over the cap is refused unread (413), a body
// that is not a JSON object is 400, an unknown field or query parameter is 400 naming the allowed
// ones, and each field must have its exact type.

import type { IncomingMessage } from 'node:http';
import { isAbsolute } from 'node:path';
import {
  AFTER_POLICIES,
  PID_NAMESPACE_MODES,
  RESTORE_POLICIES,
  type AfterPolicy,
  type PidNamespaceMode,
  type RestorePolicy,
} from '../checkpoint/types.js';
import type { Hierarchy } from '../cgroup/index.js';
import { ProtocolError } from './http-status.js';

/** Requests are a few hundred bytes; nothing legitimate comes near this. */
export const MAX_BODY_BYTES = 64 * 1024;
const MAX_STRING = 4096;
/** One day: longer than any checkpoint, shorter than forever. */
const MAX_TIMEOUT_MS = 86_400_000;

/** A request id a client may choose (X-Request-Id), and name again to cancel its operation. */
export const REQUEST_ID = /^[A-Za-z0-9._-]{1,64}$/;

function invalid(message: string): ProtocolError {
  return new ProtocolError(400, 'EINVAL', message);
}

/** Reads the whole body, refusing more than `limit` bytes. */
function readBody(req: IncomingMessage, limit = MAX_BODY_BYTES): Promise<Buffer> {
  const declared = req.headers['content-length'];
  if (declared !== undefined && Number(declared) > limit) {
    return Promise.reject(new ProtocolError(413, 'EINVAL', `request body of ${declared} bytes is larger than the ${limit}-byte limit`));
  }
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    let size = 0;
    let refused = false;
    req.on('data', (chunk: Buffer) => {
      if (refused) return;
      size += chunk.length;
      if (size > limit) {
        refused = true;
        chunks.length = 0;
        reject(new ProtocolError(413, 'EINVAL', `request body is larger than the ${limit}-byte limit`));
        return;
      }
      chunks.push(chunk);
    });
    req.on('end', () => refused || resolve(Buffer.concat(chunks)));
    req.on('error', (err) => refused || reject(err));
  });
}

/** A JSON object body; an empty body counts as `{}`. */
export async function readJsonObject(req: IncomingMessage): Promise<Record<string, unknown>> {
  const type = req.headers['content-type'];
  const raw = await readBody(req);
  if (raw.length === 0) return {};
  if (type !== undefined && !/^application\/json\s*(;|$)/i.test(type)) {
    throw new ProtocolError(415, 'EINVAL', `unsupported content type "${type}": send application/json`);
  }
  let value: unknown;
  try {
    value = JSON.parse(raw.toString('utf8'));
  } catch (err) {
    throw invalid(`malformed JSON body: ${(err as Error).message}`);
  }
  if (typeof value !== 'object' || value === null || Array.isArray(value)) {
    throw invalid(
      `the request body must be a JSON object, got ${Array.isArray(value) ? 'an array' : value === null ? 'null' : typeof value}`,
    );
  }
  return value as Record<string, unknown>;
}

/** Requests without a body (GET, DELETE) must not carry one. */
export async function expectNoBody(req: IncomingMessage): Promise<void> {
  const raw = await readBody(req);
  if (raw.length > 0) throw invalid(`${req.method} requests take no body`);
}

// ---- field checkers: each turns an unknown value into a typed one or throws EINVAL naming the field

export type Checker<T> = (value: unknown, field: string) => T;

export const text: Checker<string> = (value, field) => {
  if (typeof value !== 'string' || value.length === 0) throw invalid(`"${field}" must be a non-empty string`);
  if (value.length > MAX_STRING) throw invalid(`"${field}" is ${value.length} characters, more than ${MAX_STRING}`);
  if (value.includes('\0')) throw invalid(`"${field}" contains a NUL byte`);
  return value;
};

/** At most this many cgroups in one request (POST /v1/freeze, /v1/thaw, /v1/state). */
export const MAX_BATCH = 1024;

/** A list of cgroup names: 1 to MAX_BATCH non-empty strings (each checked as `text`). */
export const cgroupList: Checker<string[]> = (value, field) => {
  if (!Array.isArray(value) || value.length === 0) throw invalid(`"${field}" must be a non-empty array of cgroup names`);
  if (value.length > MAX_BATCH) throw invalid(`"${field}" names ${value.length} cgroups, more than ${MAX_BATCH}`);
  return value.map((item, i) => text(item, `${field}[${i}]`));
};

export const absolutePath: Checker<string> = (value, field) => {
  const path = text(value, field);
  if (!isAbsolute(path)) throw invalid(`"${field}" must be an absolute path, got "${path}"`);
  return path;
};

export const flag: Checker<boolean> = (value, field) => {
  if (typeof value !== 'boolean') throw invalid(`"${field}" must be true or false`);
  return value;
};

export const timeoutMs: Checker<number> = (value, field) => {
  if (typeof value !== 'number' || !Number.isInteger(value) || value < 1 || value > MAX_TIMEOUT_MS) {
    throw invalid(`"${field}" must be a whole number of milliseconds from 1 to ${MAX_TIMEOUT_MS}`);
  }
  return value;
};

/** An age or duration: a whole number of milliseconds, 0 or more (prune's olderThanMs). */
export const wholeMs: Checker<number> = (value, field) => {
  if (typeof value !== 'number' || !Number.isSafeInteger(value) || value < 0) {
    throw invalid(`"${field}" must be a whole number of milliseconds, 0 or more`);
  }
  return value;
};

function oneOf<T extends string>(allowed: readonly T[]): Checker<T> {
  return (value, field) => {
    if (typeof value !== 'string' || !(allowed as readonly string[]).includes(value)) {
      throw invalid(`"${field}" must be one of ${allowed.join(', ')}`);
    }
    return value as T;
  };
}

export const hierarchy: Checker<Hierarchy> = oneOf<Hierarchy>(['v1', 'v2']);
export const afterPolicy: Checker<AfterPolicy> = oneOf<AfterPolicy>(AFTER_POLICIES);
export const pidNamespace: Checker<PidNamespaceMode> = oneOf<PidNamespaceMode>(PID_NAMESPACE_MODES);
export const restorePolicy: Checker<RestorePolicy> = oneOf<RestorePolicy>(RESTORE_POLICIES);

export interface Rule<T, R extends boolean> {
  readonly check: Checker<T>;
  readonly required: R;
}
export const required = <T>(check: Checker<T>): Rule<T, true> => ({ check, required: true });
export const optional = <T>(check: Checker<T>): Rule<T, false> => ({ check, required: false });

export type Schema = Record<string, Rule<unknown, boolean>>;
export type Parsed<S extends Schema> = {
  [K in keyof S]: S[K] extends Rule<infer T, true> ? T : S[K] extends Rule<infer T, boolean> ? T | undefined : never;
};

/** Checks an object (a body, or query parameters) against a schema: no unknown, no missing, all typed. */
export function validate<S extends Schema>(input: Record<string, unknown>, schema: S, what = 'field'): Parsed<S> {
  const allowed = Object.keys(schema);
  for (const key of Object.keys(input)) {
    if (!Object.prototype.hasOwnProperty.call(schema, key)) {
      const hint = allowed.length ? ` (allowed: ${allowed.join(', ')})` : ` (this route takes no ${what}s)`;
      throw invalid(`unknown ${what} "${key.slice(0, 100)}"${hint}`);
    }
  }
  const out: Record<string, unknown> = {};
  for (const [key, rule] of Object.entries(schema)) {
    const value = input[key];
    if (value === undefined) {
      if (rule.required) throw invalid(`missing ${what} "${key}"`);
      continue;
    }
    out[key] = rule.check(value, key);
  }
  return out as Parsed<S>;
}

/** Query parameters as an object; a repeated parameter is an error, not a silent pick. */
export function queryObject(url: URL): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  for (const key of new Set(url.searchParams.keys())) {
    const values = url.searchParams.getAll(key);
    if (values.length > 1) throw invalid(`query parameter "${key.slice(0, 100)}" is given ${values.length} times`);
    out[key] = values[0];
  }
  return out;
}

/** For routes that take no query parameters: any given is EINVAL, naming it. */
export function refuseQuery(url: URL): void {
  validate(queryObject(url), {}, 'query parameter');
}

/**
 * A checkpoint id from the URL, percent-decoded. Only its shape as one path segment is checked here;
 * the image store's own check (letters, digits, '-', '_') decides the rest and answers EINVAL too.
 */
export function checkpointId(raw: string): string {
  let id: string;
  try {
    id = decodeURIComponent(raw);
  } catch {
    throw invalid(`checkpoint id "${raw.slice(0, 100)}" is not valid percent-encoding`);
  }
  if (id.length === 0 || id.length > 200 || /[/\0]/.test(id) || id === '.' || id === '..') {
    throw invalid(`invalid checkpoint id ${JSON.stringify(id.slice(0, 100))}: expected one name of letters, digits, '-' and '_'`);
  }
  return id;
}
