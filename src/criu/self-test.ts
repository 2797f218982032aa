// The verdict of scripts/install-criu.sh's functional self-test (a dump and restore of
// fixtures/criu/selftest.c, docs/criu-selection.md), which the script records as JSON. agentd only
// reads it: running the self-test is the script's job, and it takes a compiler.

import { createHash } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { release } from 'node:os';

/** Where scripts/install-criu.sh records its verdict. */
export const SELF_TEST_RECORD = '/var/lib/agentd/criu-selftest.json';

/** What the record says, as the script wrote it. */
export interface SelfTestRecord {
  readonly path: string;
  readonly version: string;
  readonly sha256: string;
  readonly kernel: string;
  readonly result: 'pass' | 'fail';
  /** Why the self-test failed; empty when it passed. */
  readonly reason: string;
  readonly testedAt: string;
  readonly durationMs: number;
}

/**
 * The self-test's word on the CRIU in use: `passed` or `failed` when the record is about this very
 * binary (same sha256) on this kernel; `stale` when it is about another binary or kernel (the
 * record says which); `not run` when there is no readable record.
 */
export type CriuSelfTest =
  | { readonly status: 'passed' | 'failed' | 'stale'; readonly recordPath: string; readonly record: SelfTestRecord; readonly why?: string }
  | { readonly status: 'not run'; readonly recordPath: string; readonly why?: string };

function parseRecord(text: string): SelfTestRecord | undefined {
  const r = JSON.parse(text) as Partial<Record<keyof SelfTestRecord, unknown>>;
  const strings = ['path', 'version', 'sha256', 'kernel', 'reason', 'testedAt'] as const;
  if (strings.some((k) => typeof r[k] !== 'string') || (r.result !== 'pass' && r.result !== 'fail') || typeof r.durationMs !== 'number') {
    return undefined;
  }
  return r as SelfTestRecord;
}

function sha256Of(path: string): string | undefined {
  try {
    return createHash('sha256').update(readFileSync(path)).digest('hex');
  } catch {
    return undefined;
  }
}

/** Reads the record at `recordPath` and judges whether it is about `criuPath` on this kernel. */
export function readSelfTest(criuPath: string, recordPath: string = SELF_TEST_RECORD, kernel: string = release()): CriuSelfTest {
  let text: string;
  try {
    text = readFileSync(recordPath, 'utf8');
  } catch {
    return { status: 'not run', recordPath };
  }
  let record: SelfTestRecord | undefined;
  try {
    record = parseRecord(text);
  } catch {
    record = undefined;
  }
  if (!record) return { status: 'not run', recordPath, why: `${recordPath} is not a self-test record` };
  if (record.kernel !== kernel) {
    return { status: 'stale', recordPath, record, why: `tested on kernel ${record.kernel}, this is ${kernel}` };
  }
  if (record.path !== criuPath || record.sha256 !== sha256Of(criuPath)) {
    return { status: 'stale', recordPath, record, why: `the record is about CRIU ${record.version} at ${record.path}, not this binary` };
  }
  return { status: record.result === 'pass' ? 'passed' : 'failed', recordPath, record };
}
