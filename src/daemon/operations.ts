// Long operations in flight (checkpoints and restores), each with the AbortController that cancels
// it: on SIGTERM the daemon aborts them all and the orchestration puts each cgroup back in its prior
// state; when a client disconnects mid-operation, its operation is aborted the same way.

export type OperationKind = 'checkpoint' | 'restore' | 'export' | 'import';

export interface RunningOperation {
  readonly kind: OperationKind;
  readonly requestId: string;
  /** `v2:jobs/x` for a checkpoint; the image id for a restore. */
  readonly target: string;
  readonly startedAt: number;
  readonly controller: AbortController;
}

export class Operations {
  private readonly running = new Map<string, RunningOperation>();

  start(kind: OperationKind, requestId: string, target: string): RunningOperation {
    const op: RunningOperation = { kind, requestId, target, startedAt: Date.now(), controller: new AbortController() };
    this.running.set(requestId, op);
    return op;
  }

  finish(op: RunningOperation): void {
    this.running.delete(op.requestId);
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

  /** Cgroups with a checkpoint of this agent in flight (CHECKPOINTING, or about to be). */
  checkpointing(): string[] {
    return this.list()
      .filter((op) => op.kind === 'checkpoint')
      .map((op) => op.target);
  }
}
