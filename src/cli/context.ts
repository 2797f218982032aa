// What every command gets from the global options, and the wrapper that turns its failures into the
// `agentctl: <CODE>: <message>` line and the exit status of exit-codes.ts.

import type { Argv } from 'yargs';
import { AgentError, isAgentError } from '../errors/index.js';
import type { ClientOptions } from './client.js';
import { exitCodeFor } from './exit-codes.js';

export interface GlobalArgs {
  readonly socket: string;
  readonly json: boolean;
  /** Seconds. */
  readonly timeout?: number;
}

/** Short requests (state, thaw, lists) wait this long when --timeout is not given. */
export const DEFAULT_WAIT_MS = 30_000;

/** The client's wait: --timeout, plus `graceMs` for operations that pass --timeout on to the agent. */
export function clientOptions(args: GlobalArgs, opts: { graceMs?: number; defaultMs?: number | null } = {}): ClientOptions {
  if (args.timeout !== undefined) return { socket: args.socket, timeoutMs: args.timeout * 1000 + (opts.graceMs ?? 0) };
  const fallback = opts.defaultMs === undefined ? DEFAULT_WAIT_MS : opts.defaultMs;
  return fallback === null ? { socket: args.socket } : { socket: args.socket, timeoutMs: fallback };
}

export function reportError(err: unknown): number {
  const error = isAgentError(err) ? err : new AgentError('EIO', err instanceof Error ? err.message : String(err));
  process.stderr.write(`agentctl: ${error.code}: ${error.message}\n`);
  return exitCodeFor(error.code);
}

/** Runs a command body; any failure is reported and sets the exit status. */
export function action<A>(body: (args: A) => Promise<void>): (args: A) => Promise<void> {
  return async (args) => {
    try {
      await body(args);
    } catch (err) {
      process.exitCode = reportError(err);
    }
  };
}

/** `--hierarchy v1|v2`, for every command that names a cgroup. */
export function withHierarchy<T>(y: Argv<T>) {
  return y.option('hierarchy', {
    choices: ['v1', 'v2'] as const,
    describe: 'the hierarchy of the cgroup (default: v2 when the path has a v2 freezer, else v1)',
  });
}

/** The path of a query string built from defined values only. */
export function withQuery(path: string, query: Record<string, string | undefined>): string {
  const params = new URLSearchParams();
  for (const [k, v] of Object.entries(query)) if (v !== undefined) params.set(k, v);
  const text = params.toString();
  return text ? `${path}?${text}` : path;
}
