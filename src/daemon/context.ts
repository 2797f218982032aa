// What a route handler gets: the request, the agent's services, and an audit record it fills in
// (operation, cgroup) so that the dispatcher can log every mutating request with its outcome.

import type { IncomingMessage, ServerResponse } from 'node:http';
import type { Archives } from '../archive/index.js';
import type { Checkpointer } from '../checkpoint/index.js';
import type { CgroupControl } from '../lock/index.js';
import type { HostFactsSource } from './host.js';
import type { Logger } from './logging.js';
import type { Metrics } from './metrics.js';
import type { Operations } from './operations.js';
import type { PeerCredentials } from './peer.js';
import type { TerminalSessions } from '../terminal/index.js';

export interface Services {
  readonly control: CgroupControl;
  readonly checkpointer: Checkpointer;
  readonly archives: Archives;
  readonly host: HostFactsSource;
  readonly metrics: Metrics;
  readonly operations: Operations;
  readonly logger: Logger;
  /** Terminals held for restored shell jobs (restore with `attach`). */
  readonly terminals: TerminalSessions;
  readonly version: string;
  readonly startedAt: Date;
  shuttingDown(): boolean;
}

export interface Audit {
  operation?: string;
  /** `v2:jobs/x` */
  cgroup?: string;
  checkpoint?: string;
}

export interface RequestContext {
  readonly req: IncomingMessage;
  readonly res: ServerResponse;
  readonly url: URL;
  readonly params: Readonly<Record<string, string>>;
  readonly requestId: string;
  readonly peer?: PeerCredentials;
  readonly services: Services;
  readonly audit: Audit;
}

/** A route's answer: JSON, text, or a stream the handler already wrote (with its final status). */
export type Reply =
  | { readonly kind: 'json'; readonly status: number; readonly body: unknown }
  | { readonly kind: 'text'; readonly status: number; readonly contentType: string; readonly text: string }
  | { readonly kind: 'streamed'; readonly status: number; readonly code?: string };

export const json = (status: number, body: unknown): Reply => ({ kind: 'json', status, body });

export type Handler = (ctx: RequestContext) => Promise<Reply>;
