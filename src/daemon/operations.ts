// Long operations in flight (checkpoints and restores), each with the AbortController that cancels
// it: on SIGTERM the daemon aborts them all and the orchestration puts each cgroup back in its prior
// state; when a client disconnects mid-operation, its operation is aborted the same way. What each
// is doing now (its last progress stage) and who asked for it are kept for GET /v1/operations.

import type { PeerCredentials } from './peer.js';

export type OperationKind = 'checkpoint' | 'restore' | 'export' | 'import';

export interface RunningOperation {
  readonly kind: OperationKind;
  readonly requestId: string;
  /** `v2:jobs/x` for a checkpoint; the image id for a restore. */
  readonly target: string;
  /** The cgroup it works on, `v2:jobs/x` (for a restore: where it restores to). */
  readonly cgroup: string;
  readonly startedAt: number;
  readonly controller: AbortController;
  /** Who sent the request (SO_PEERCRED), when known. */
  readonly peer?: PeerCredentials;
  /** The last progress stage the operation reported ('dump', 'manifest', ...); 'started' before any. */
  phase: string;
  /** Set when a cancel was asked for (the operation is winding down). */
  cancelledAt?: number;
}

/** One running operation as GET /v1/operations and GET /v1/health show it. */
export interface OperationView {
  readonly requestId: string;
  readonly kind: OperationKind;
  /** `v2:jobs/x` for a checkpoint; the checkpoint id for a restore. */
  readonly target: string;
  /** The cgroup it works on, `v2:jobs/x` (for a restore: where it restores to). */
  readonly cgroup: string;
  readonly phase: string;
  /** ISO time the request began. */
  readonly since: string;
  readonly cancelling: boolean;
  readonly peer?: { readonly pid: number; readonly uid: number };
}

/** What agentd is doing, in a few words: systemd shows it as `Status:` (`systemctl status agentd`). */
export function describeOperations(ops: readonly RunningOperation[]): string {
  if (ops.length === 0) return 'idle';
  return ops.map((op) => `${op.kind} of ${op.cgroup || op.target} (request ${op.requestId})`).join('; ');
}

export class Operations {
  private readonly running = new Map<string, RunningOperation>();

  /** `onChange` hears of every start and finish (the daemon passes the news on to systemd). */
  constructor(private readonly onChange: (ops: readonly RunningOperation[]) => void = () => {}) {}

  start(kind: OperationKind, requestId: string, target: string, cgroup: string, peer?: PeerCredentials): RunningOperation {
    const op: RunningOperation = {
      kind,
      requestId,
      target,
      cgroup,
      startedAt: Date.now(),
      controller: new AbortController(),
      phase: 'started',
      ...(peer ? { peer } : {}),
    };
    this.running.set(requestId, op);
    this.onChange(this.list());
    return op;
  }

  finish(op: RunningOperation): void {
    if (this.running.delete(op.requestId)) this.onChange(this.list());
  }

  abortAll(reason: string): number {
    for (const op of this.running.values()) op.controller.abort(new Error(reason));
    return this.running.size;
  }

  get(requestId: string): RunningOperation | undefined {
    return this.running.get(requestId);
  }

  list(): RunningOperation[] {
    return [...this.running.values()];
  }

  /** The running operations, oldest first, as the API shows them. */
  views(): OperationView[] {
    return this.list()
      .sort((a, b) => a.startedAt - b.startedAt)
      .map((op) => ({
        requestId: op.requestId,
        kind: op.kind,
        target: op.target,
        cgroup: op.cgroup,
        phase: op.phase,
        since: new Date(op.startedAt).toISOString(),
        cancelling: op.cancelledAt !== undefined,
        ...(op.peer ? { peer: { pid: op.peer.pid, uid: op.peer.uid } } : {}),
      }));
  }

  /** Cgroups with a checkpoint of this agent in flight (CHECKPOINTING, or about to be). */
  checkpointing(): string[] {
    return this.list()
      .filter((op) => op.kind === 'checkpoint')
      .map((op) => op.target);
  }
}
