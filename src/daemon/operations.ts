// Long operations in flight (checkpoints and restores), each with the AbortController that cancels
// it: on SIGTERM the daemon aborts them all and the orchestration puts each cgroup back in its prior
// state; when a client disconnects mid-operation, its operation is aborted the same way.

export type OperationKind = 'checkpoint' | 'restore';

export interface RunningOperation {
  readonly kind: OperationKind;
  readonly requestId: string;
  /** `v2:jobs/x` for a checkpoint; the image id for a restore. */
  readonly target: string;
  readonly startedAt: number;
  readonly controller: AbortController;
}

/** What agentd is doing, in a few words: systemd shows it as `Status:` (`systemctl status agentd`). */
export function describeOperations(ops: readonly RunningOperation[]): string {
  if (ops.length === 0) return 'idle';
  return ops.map((op) => `${op.kind} of ${op.target} (request ${op.requestId})`).join('; ');
}

export class Operations {
  private readonly running = new Map<string, RunningOperation>();

  /** `onChange` hears of every start and finish (the daemon passes the news on to systemd). */
  constructor(private readonly onChange: (ops: readonly RunningOperation[]) => void = () => {}) {}

  start(kind: OperationKind, requestId: string, target: string): RunningOperation {
    const op: RunningOperation = { kind, requestId, target, startedAt: Date.now(), controller: new AbortController() };
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

  /** Cgroups with a checkpoint of this agent in flight (CHECKPOINTING, or about to be). */
  checkpointing(): string[] {
    return this.list()
      .filter((op) => op.kind === 'checkpoint')
      .map((op) => op.target);
  }
}
