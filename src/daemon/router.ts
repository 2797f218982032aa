// Matching a method and path to a route. Patterns are literal segments and `{name}` placeholders,
// one segment each. An unknown path is 404; a known path with another method is 405 with Allow.

import { ProtocolError } from './http-status.js';
import type { Handler } from './context.js';

export type Method = 'GET' | 'POST' | 'DELETE';

export interface Route {
  readonly method: Method;
  /** `/v1/checkpoints/{id}`; also the `route` label of metrics. */
  readonly pattern: string;
  readonly handle: Handler;
  /** A POST that changes nothing (POST /v1/state): logged at debug, as GETs are, not audited at info. */
  readonly readOnly?: boolean;
}

export interface Match {
  readonly route: Route;
  readonly params: Record<string, string>;
}

// A pattern's segments, split once: matching runs over every route for every request.
const segmentsOf = new Map<string, string[]>();

function matchPattern(pattern: string, got: readonly string[]): Record<string, string> | undefined {
  let want = segmentsOf.get(pattern);
  if (want === undefined) {
    want = pattern.split('/');
    segmentsOf.set(pattern, want);
  }
  if (want.length !== got.length) return undefined;
  const params: Record<string, string> = {};
  for (let i = 0; i < want.length; i++) {
    const w = want[i];
    const g = got[i];
    if (w.startsWith('{') && w.endsWith('}')) {
      if (g === '') return undefined;
      params[w.slice(1, -1)] = g;
    } else if (w !== g) {
      return undefined;
    }
  }
  return params;
}

export function matchRoute(routes: readonly Route[], method: string, path: string): Match {
  const allowed: string[] = [];
  const got = path.split('/');
  for (const route of routes) {
    const params = matchPattern(route.pattern, got);
    if (!params) continue;
    if (route.method === method) return { route, params };
    allowed.push(route.method);
  }
  if (allowed.length > 0) {
    throw new ProtocolError(405, 'EINVAL', `${method} is not allowed on ${path} (allowed: ${allowed.join(', ')})`, {
      Allow: allowed.join(', '),
    });
  }
  throw new ProtocolError(404, 'ENOENT', `no such route: ${method} ${path.slice(0, 200)} (see GET /v1 for the list)`);
}
