// Summaries of repeated measurements. Percentiles by the nearest-rank method: with 30 runs the p95
// is the 29th smallest value, an actual measurement rather than an interpolation.

export interface Summary {
  readonly runs: number;
  readonly median: number;
  readonly p95: number;
  readonly min: number;
  readonly max: number;
  readonly mean: number;
  /** Every measurement, in the order taken. */
  readonly values: readonly number[];
}

export function percentile(sorted: readonly number[], p: number): number {
  if (sorted.length === 0) return NaN;
  const rank = Math.ceil((p / 100) * sorted.length);
  return sorted[Math.min(sorted.length, Math.max(1, rank)) - 1];
}

/** Median as the mean of the two middle values for an even count. */
export function median(sorted: readonly number[]): number {
  if (sorted.length === 0) return NaN;
  const mid = sorted.length >> 1;
  return sorted.length % 2 === 1 ? sorted[mid] : (sorted[mid - 1] + sorted[mid]) / 2;
}

export function summarize(values: readonly number[]): Summary {
  const sorted = [...values].sort((a, b) => a - b);
  const round = (x: number) => Math.round(x * 10_000) / 10_000;
  return {
    runs: values.length,
    median: round(median(sorted)),
    p95: round(percentile(sorted, 95)),
    min: round(sorted[0] ?? NaN),
    max: round(sorted[sorted.length - 1] ?? NaN),
    mean: round(values.reduce((a, b) => a + b, 0) / (values.length || 1)),
    values: values.map(round),
  };
}

export function ratio(a: number, b: number): number {
  return b > 0 ? Math.round((a / b) * 100) / 100 : NaN;
}
