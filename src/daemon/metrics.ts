// /v1/metrics through prom-client: agentd's own series (requests, error replies by code, freeze,
// checkpoint and restore durations, the cgroups being checkpointed right now) plus prom-client's
// process, heap, GC and event-loop metrics, in one private registry rendered in the Prometheus text
// format 0.0.4. The library does the exposition (escaping, histogram buckets, +Inf, HELP/TYPE
// order) that was hand-written here before; docs/daemon-and-cli.md#metrics lists what it measured.

import { collectDefaultMetrics, Counter, Gauge, Histogram, Registry } from 'prom-client';

/** The Content-Type of the exposition: the text format 0.0.4. */
export const METRICS_CONTENT_TYPE = Registry.PROMETHEUS_CONTENT_TYPE;

// A v2 freeze takes microseconds per task, a v1 one up to a third of a second under load (docs/freezer.md);
// a checkpoint from a tenth of a second (a small tree) to seconds (GiBs of memory).
const FREEZE_BUCKETS = [0.0005, 0.001, 0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10];
const CHECKPOINT_BUCKETS = [0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300];

export class Metrics {
  private readonly registry = new Registry();
  readonly requests: Counter<'method' | 'route' | 'status'>;
  readonly errors: Counter<'code'>;
  readonly freezes: Histogram;
  readonly checkpoints: Histogram;
  readonly frozenWindows: Histogram;
  readonly restores: Histogram;

  constructor(checkpointing: () => string[]) {
    const registers = [this.registry];
    // process_*, nodejs_heap_*, nodejs_gc_*, nodejs_eventloop_lag_* ...: read when scraped. The
    // event-loop lag comes from a perf_hooks timer; at prom-client's default of 10 ms it woke the
    // idle agent 870 times in 10 s (7 without it) and cost 60 ms of CPU; at 100 ms, 98 times and no
    // measurable CPU (docs/bench.md), still fine enough for the stalls that matter here (a watchdog
    // ping is late after seconds, a request after tens of milliseconds).
    collectDefaultMetrics({ register: this.registry, eventLoopMonitoringPrecision: 100 });
    new Gauge({ name: 'agentd_start_time_seconds', help: 'When the agent started, in seconds since the epoch.', registers }).set(
      Date.now() / 1000,
    );
    this.requests = new Counter({
      name: 'agentd_requests_total',
      help: 'HTTP requests answered, by method, route and status.',
      labelNames: ['method', 'route', 'status'],
      registers,
    });
    this.errors = new Counter({ name: 'agentd_errors_total', help: 'Error replies, by error code.', labelNames: ['code'], registers });
    this.freezes = new Histogram({
      name: 'agentd_freeze_duration_seconds',
      help: 'Time to freeze a cgroup on request.',
      buckets: FREEZE_BUCKETS,
      registers,
    });
    this.checkpoints = new Histogram({
      name: 'agentd_checkpoint_duration_seconds',
      help: 'Time of successful checkpoints, request to policy applied.',
      buckets: CHECKPOINT_BUCKETS,
      registers,
    });
    this.frozenWindows = new Histogram({
      name: 'agentd_checkpoint_frozen_window_seconds',
      help: 'How long a successful checkpoint kept its workload stopped.',
      buckets: CHECKPOINT_BUCKETS,
      registers,
    });
    this.restores = new Histogram({
      name: 'agentd_restore_duration_seconds',
      help: 'Time of successful restores.',
      buckets: CHECKPOINT_BUCKETS,
      registers,
    });
    new Gauge({
      name: 'agentd_checkpointing_cgroups',
      help: 'Cgroups this agent is checkpointing right now.',
      registers,
      collect() {
        this.set(checkpointing().length);
      },
    });
    new Gauge({
      name: 'agentd_checkpointing',
      help: 'One series per cgroup being checkpointed right now.',
      labelNames: ['cgroup'],
      registers,
      collect() {
        // Rebuilt at each scrape: a cgroup whose checkpoint ended has no series, not a 0.
        this.reset();
        for (const cgroup of checkpointing()) this.set({ cgroup }, 1);
      },
    });
  }

  /** The exposition of every metric, as GET /v1/metrics answers it. */
  render(): Promise<string> {
    return this.registry.metrics();
  }
}
