// The printed table: every figure with the baseline it is judged against, then the targets.

import type { BenchResults } from './index.js';
import type { LatencyCase, Method, Operation } from './latency.js';
import { MB } from './targets.js';

function fmt(ms: number | undefined): string {
  if (ms === undefined || Number.isNaN(ms)) return '-';
  if (ms >= 100) return ms.toFixed(0);
  if (ms >= 10) return ms.toFixed(1);
  if (ms >= 1) return ms.toFixed(2);
  return ms.toFixed(3);
}

function x(r: number | undefined): string {
  return r === undefined || Number.isNaN(r) ? '' : `x${r >= 10 ? r.toFixed(0) : r.toFixed(1)}`;
}

/** Columns before `leftColumns` are left-aligned (names), the rest right-aligned (figures). */
function table(header: string[], rows: string[][], leftColumns = 3): string {
  const widths = header.map((h, i) => Math.max(h.length, ...rows.map((r) => (r[i] ?? '').length)));
  const line = (cells: string[]) =>
    cells
      .map((c, i) => (i < leftColumns ? c.padEnd(widths[i]) : c.padStart(widths[i])))
      .join('  ')
      .replace(/\s+$/, '');
  return [line(header), line(widths.map((w) => '-'.repeat(w))), ...rows.map(line)].join('\n');
}

const LATENCY_METHODS: readonly Method[] = ['c', 'poll10', 'library', 'control', 'api'];
const METHOD_TITLE: Record<Method, string> = {
  c: 'C baseline',
  poll10: 'poll 10ms',
  library: 'library',
  control: 'CgroupControl',
  api: 'API',
};

function latencyTable(cases: readonly LatencyCase[], op: Operation): string {
  const methods = LATENCY_METHODS.filter((m) => cases.some((c) => c.methods[m]));
  const header = ['hier', 'tasks', 'N', ...methods.map((m) => `${METHOD_TITLE[m]} med/p95`)];
  const rows = cases.map((c) => [
    c.hierarchy,
    c.workload,
    String(c.processes),
    ...methods.map((m) => {
      const r = c.methods[m];
      if (!r) return '-';
      const s = r[op];
      const vs = r.vsC ? ` ${x(op === 'freeze' ? r.vsC.freezeMedian : r.vsC.thawMedian)}` : '';
      return `${fmt(s.median)}/${fmt(s.p95)}${vs}`;
    }),
  ]);
  return table(header, rows);
}

export function formatReport(r: BenchResults): string {
  const out: string[] = [];
  const la = r.host.loadAverage;
  out.push(
    `agentd benchmark: ${r.startedAt}, ${r.durationS} s, kernel ${r.host.kernel}, ${r.host.cpus} CPUs, node ${r.host.node}` +
      `${r.host.criu ? `, CRIU ${r.host.criu.version}` : ''}; load average ${la.start.join(' ')} at start, ${la.end.join(' ')} at end`,
  );
  if (r.latency.length > 0) {
    const runs = r.latency[0].methods.c?.freeze.runs ?? 0;
    out.push('', `FREEZE latency, ms (median/p95 of ${runs} runs; xR = median / C baseline median)`, latencyTable(r.latency, 'freeze'));
    out.push('', `THAW latency, ms (same layout)`, latencyTable(r.latency, 'thaw'));
  }
  if (r.checkpoint) {
    const rows = r.checkpoint.cases.map((c) => [
      c.fixture,
      c.hierarchy,
      String(c.processes),
      `${(c.imageBytes / MB).toFixed(1)} MB`,
      `${fmt(c.agentd.totalMs.median)}/${fmt(c.agentd.totalMs.p95)}`,
      `${fmt(c.criu.totalMs.median)}/${fmt(c.criu.totalMs.p95)}`,
      x(c.ratio),
      fmt(c.agentd.frozenWindowMs.median),
      fmt(c.agentd.afterDumpMs.median),
      `${((100 * c.agentd.hashedDuringDumpBytes.median) / Math.max(1, c.imageBytes)).toFixed(0)}%`,
      fmt(c.agentd.hashMs.median),
      String(c.agentd.hashMBps),
      fmt(c.agentd.publishMs.median),
      fmt(c.agentd.criuFrozenMs.median),
      fmt(c.criu.frozenMs.median),
      `${c.frozenExcessMs >= 0 ? '+' : ''}${c.frozenExcessMs}`,
    ]);
    out.push(
      '',
      `CHECKPOINT, ms (median/p95 of ${r.options.checkpointRuns} runs each, images on ${r.checkpoint.tmpfs})`,
      table(
        [
          'fixture',
          'hier',
          'procs',
          'image',
          'agentd',
          'bare criu',
          'ratio',
          'agentd frozen',
          '(after dump)',
          'hashed in dump',
          'then hash',
          'MB/s',
          'publish',
          "(its CRIU's)",
          'criu frozen_time',
          'excess',
        ],
        rows,
      ),
    );
  }
  if (r.throughput) {
    out.push(
      '',
      'STATE requests per second over the socket (kept-alive connections, one per client)',
      table(
        ['clients', '', '', 'agentd', 'bare node:http', 'ratio'],
        r.throughput.state.map((s) => [String(s.clients), '', '', String(s.agentd.rps), String(s.plainNode.rps), x(s.ratio)]),
      ),
    );
    out.push(
      '',
      `${r.options.concurrentCgroups} CGROUPS AT ONCE (one sleeping task each), ms median/p95 of ${r.options.concurrentRuns} runs`,
      table(
        ['hier', 'op', '', 'C baseline', 'library', `API (${r.options.concurrentCgroups} requests)`, 'API (1 request)'],
        r.throughput.concurrent.flatMap((c) =>
          (['freeze', 'thaw'] as const).map((op) => [
            c.hierarchy,
            op,
            '',
            `${fmt(c.methods.c[op].median)}/${fmt(c.methods.c[op].p95)}`,
            `${fmt(c.methods.library[op].median)}/${fmt(c.methods.library[op].p95)} ${x(c.vsC.library[op])}`,
            `${fmt(c.methods.api[op].median)}/${fmt(c.methods.api[op].p95)} ${x(c.vsC.api[op])}`,
            `${fmt(c.methods.batch[op].median)}/${fmt(c.methods.batch[op].p95)} ${x(c.vsC.batch[op])}`,
          ]),
        ),
      ),
    );
  }
  if (r.cli) {
    const c = r.cli;
    out.push(
      '',
      `AGENTCTL START-UP, ms median/p95 of ${c.runs} whole processes: node -e 0 ${fmt(c.node.median)}/${fmt(c.node.p95)}, ` +
        `agentctl state ${fmt(c.agentctl.median)}/${fmt(c.agentctl.p95)} ${x(c.ratio)}`,
    );
  }
  if (r.memory) {
    const m = r.memory;
    const batches = m.afterBatches.map((b, i) => `${(i + 1) * m.operations}: ${(b / MB).toFixed(1)}`).join(', ');
    out.push(
      '',
      `MEMORY (agentd VmRSS, MB): idle ${(m.idleBytes / MB).toFixed(1)}; after N operations ${batches}` +
        `; steady ${(m.steadyBytes / MB).toFixed(1)}, peak ${(m.peakBytes / MB).toFixed(1)}`,
    );
  }
  out.push(
    '',
    'TARGETS',
    table(
      ['', 'name', 'measured', 'target'],
      r.targets.map((t) => [
        t.met === null ? 'n/a ' : t.met ? 'MET ' : 'MISS',
        t.name,
        t.measured === null ? '-' : `${t.measured} ${t.unit}`,
        `${t.target}${t.where ? ` (${t.where})` : ''}`,
      ]),
      4,
    ),
  );
  if (r.leftovers.length > 0) out.push('', `LEFT BEHIND (cleanup failed): ${r.leftovers.join(', ')}`);
  return out.join('\n');
}
