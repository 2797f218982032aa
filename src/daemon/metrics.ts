// Prometheus text-format metrics (exposition format 0.0.4), kept in memory since the agent started:
// requests, error replies by code, freeze and checkpoint durations, and the cgroups being
// checkpointed right now. Small enough not to need a client library.

export const METRICS_CONTENT_TYPE = 'text/plain; version=0.0.4; charset=utf-8';

function labelValue(value: string): string {
  return value.replace(/\\/g, '\\\\').replace(/"/g, '\\"').replace(/\n/g, '\\n');
}

function labels(pairs: Record<string, string>): string {
  const inner = Object.entries(pairs)
    .map(([k, v]) => `${k}="${labelValue(v)}"`)
    .join(',');
  return inner ? `{${inner}}` : '';
}

class Counter {
  private readonly values = new Map<string, number>();

  constructor(
    readonly name: string,
    readonly help: string,
  ) {}

  inc(pairs: Record<string, string>, by = 1): void {
    const key = labels(pairs);
    this.values.set(key, (this.values.get(key) ?? 0) + by);
  }

  render(): string[] {
    const lines = [`# HELP ${this.name} ${this.help}`, `# TYPE ${this.name} counter`];
    for (const [key, value] of [...this.values].sort()) lines.push(`${this.name}${key} ${value}`);
    return lines;
  }
}

class Histogram {
  private readonly counts: number[];
  private sum = 0;
  private count = 0;

  constructor(
    readonly name: string,
    readonly help: string,
    private readonly buckets: readonly number[],
  ) {
    this.counts = buckets.map(() => 0);
  }

  observe(seconds: number): void {
    this.sum += seconds;
    this.count++;
    this.buckets.forEach((le, i) => {
      if (seconds <= le) this.counts[i]++;
    });
  }

  render(): string[] {
    const lines = [`# HELP ${this.name} ${this.help}`, `# TYPE ${this.name} histogram`];
    this.buckets.forEach((le, i) => lines.push(`${this.name}_bucket{le="${le}"} ${this.counts[i]}`));
    lines.push(`${this.name}_bucket{le="+Inf"} ${this.count}`, `${this.name}_sum ${this.sum}`, `${this.name}_count ${this.count}`);
    return lines;
  }
}

// A v2 freeze takes microseconds per task, a v1 one up to a third of a second under load (docs/freezer.md);
// a checkpoint from a tenth of a second (a small tree) to seconds (GiBs of memory).
const FREEZE_BUCKETS = [0.0005, 0.001, 0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10];
const CHECKPOINT_BUCKETS = [0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300];

export class Metrics {
  private readonly startTime = Date.now() / 1000;
  readonly requests = new Counter('agentd_requests_total', 'HTTP requests answered, by method, route and status.');
  readonly errors = new Counter('agentd_errors_total', 'Error replies, by error code.');
  readonly freezes = new Histogram('agentd_freeze_duration_seconds', 'Time to freeze a cgroup on request.', FREEZE_BUCKETS);
  readonly checkpoints = new Histogram(
    'agentd_checkpoint_duration_seconds',
    'Time of successful checkpoints, request to policy applied.',
    CHECKPOINT_BUCKETS,
  );
  readonly frozenWindows = new Histogram(
    'agentd_checkpoint_frozen_window_seconds',
    'How long a successful checkpoint kept its workload stopped.',
    CHECKPOINT_BUCKETS,
  );
  readonly restores = new Histogram('agentd_restore_duration_seconds', 'Time of successful restores.', CHECKPOINT_BUCKETS);

  constructor(private readonly checkpointing: () => string[]) {}

  render(): string {
    const now = this.checkpointing();
    const lines = [
      '# HELP agentd_start_time_seconds When the agent started, in seconds since the epoch.',
      '# TYPE agentd_start_time_seconds gauge',
      `agentd_start_time_seconds ${this.startTime}`,
      ...this.requests.render(),
      ...this.errors.render(),
      ...this.freezes.render(),
      ...this.checkpoints.render(),
      ...this.frozenWindows.render(),
      ...this.restores.render(),
      '# HELP agentd_checkpointing_cgroups Cgroups this agent is checkpointing right now.',
      '# TYPE agentd_checkpointing_cgroups gauge',
      `agentd_checkpointing_cgroups ${now.length}`,
      '# HELP agentd_checkpointing One series per cgroup being checkpointed right now.',
      '# TYPE agentd_checkpointing gauge',
      ...now.map((cgroup) => `agentd_checkpointing${labels({ cgroup })} 1`),
    ];
    return lines.join('\n') + '\n';
  }
}
