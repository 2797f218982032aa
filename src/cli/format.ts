// Human output: sizes, durations, tables. --json output bypasses all of this.

export function bytes(n: number | undefined): string {
  if (n === undefined) return '-';
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  let value = n;
  let unit = 0;
  while (value >= 1024 && unit < units.length - 1) {
    value /= 1024;
    unit++;
  }
  return unit === 0 ? `${n} B` : `${value.toFixed(value < 10 ? 1 : 0)} ${units[unit]}`;
}

export function duration(ms: number | undefined): string {
  if (ms === undefined) return '-';
  return ms < 1000 ? `${Math.round(ms)} ms` : `${(ms / 1000).toFixed(ms < 10_000 ? 2 : 1)} s`;
}

/**
 * A checkpoint's stopped window and the phases around it: "stopped 0.81 s (dump 0.80 s), then
 * checksums 95 ms (2.8 GB/s), publish 2 ms, total 1.02 s". When part of the image was hashed while
 * CRIU wrote it, the checksums' time is what was left after CRIU, its rate over the bytes left, and
 * the share hashed during the dump is said: "checksums 60 ms (900 MB/s; 70% during the dump)".
 * Manifests older than hashMs and publishMs show without them.
 */
export function checkpointTimings(
  t: { frozenWindowMs: number; dumpMs: number; hashMs?: number; hashedDuringDumpBytes?: number; publishMs?: number; totalMs: number },
  imageBytes: number,
): string {
  const phases = [`stopped ${duration(t.frozenWindowMs)} (dump ${duration(t.dumpMs)})`];
  const early = Math.min(imageBytes, t.hashedDuringDumpBytes ?? 0);
  const during = early > 0 ? `${Math.round((100 * early) / imageBytes)}% during the dump` : undefined;
  if (t.hashMs !== undefined) {
    const detail = [t.hashMs > 0 && imageBytes > early ? rate(imageBytes - early, t.hashMs) : undefined, during].filter(Boolean);
    phases.push(`checksums ${duration(t.hashMs)}${detail.length ? ` (${detail.join('; ')})` : ''}`);
  }
  if (t.publishMs !== undefined) phases.push(`publish ${duration(t.publishMs)}`);
  return `${phases.join(', ')}, total ${duration(t.totalMs)}`;
}

/** Bytes per second in decimal units, as disks and networks are rated. */
export function rate(n: number, ms: number): string {
  const perSecond = (n / ms) * 1000;
  return perSecond >= 1e9 ? `${(perSecond / 1e9).toFixed(1)} GB/s` : `${Math.round(perSecond / 1e6)} MB/s`;
}

/** Left-aligned columns separated by two spaces. */
export function table(header: string[], rows: string[][]): string {
  const widths = header.map((h, i) => Math.max(h.length, ...rows.map((r) => (r[i] ?? '').length)));
  const line = (cells: string[]) =>
    cells
      .map((c, i) => (i === cells.length - 1 ? c : c.padEnd(widths[i])))
      .join('  ')
      .trimEnd();
  return [line(header), ...rows.map(line)].join('\n');
}

export function print(text: string): void {
  process.stdout.write(text.endsWith('\n') ? text : text + '\n');
}

export function printJson(value: unknown): void {
  process.stdout.write(JSON.stringify(value, null, 2) + '\n');
}
