// `criu cpuinfo dump` and `criu cpuinfo check`: what CRIU knows of the CPU a checkpoint was taken on.
//
// Measured with CRIU 4.2.1: `cpuinfo dump -D DIR` writes DIR/cpuinfo.img (114 bytes here, one
// x86 entry: vendor, family, model, the CPUID capability words, the xsave feature mask and size)
// in 0.06 s; `cpuinfo check -D DIR` exits 1 when this host cannot run what the image's CPU could,
// with an error line naming the difference ("cpu: CPU xfeatures has unsupported bits (0x...)").
// `criu restore` itself never reads cpuinfo.img (unless told to with --cpu-cap), so the check is
// ours to run before a restore.

import { join } from 'node:path';
import { AgentError, isAgentError } from '../errors/index.js';
import { checkAbsolute } from './dump.js';
import { runCriu, type CriuRunOptions } from './run.js';

/** The file `criu cpuinfo dump` writes into its -D directory. */
export const CPUINFO_IMAGE = 'cpuinfo.img';

export interface CpuinfoOptions extends CriuRunOptions {
  /** Absolute directory holding (or to hold) cpuinfo.img. */
  readonly dir: string;
  /** Absolute directory for CRIU's log (-W). Default: dir. */
  readonly workDir?: string;
  /** Log file name inside the work dir. */
  readonly logName?: string;
}

function cpuinfoArgs(action: 'dump' | 'check', opts: CpuinfoOptions): { args: string[]; logPath: string } {
  checkAbsolute('the cpuinfo directory', opts.dir);
  const workDir = opts.workDir ?? opts.dir;
  checkAbsolute('the work directory', workDir);
  const logName = opts.logName ?? `cpuinfo-${action}.log`;
  return { args: ['cpuinfo', action, '-D', opts.dir, '-W', workDir, '-o', logName, '-v4'], logPath: join(workDir, logName) };
}

/** Writes this host's cpuinfo.img into opts.dir. */
export async function dumpCpuinfo(opts: CpuinfoOptions): Promise<void> {
  const { args, logPath } = cpuinfoArgs('dump', opts);
  await runCriu(`criu cpuinfo dump into ${opts.dir}`, args, logPath, opts);
}

/** What `criu cpuinfo check` found: ok, or the error lines of its log saying what differs. */
export type CpuinfoVerdict =
  { readonly ok: true } | { readonly ok: false; readonly differences: readonly string[]; readonly logPath: string };

/**
 * Checks opts.dir/cpuinfo.img against this host's CPU. A mismatch is a verdict, not an error;
 * a CRIU that could not run the check at all (timeout, missing binary) throws as runCriu does.
 */
export async function checkCpuinfo(opts: CpuinfoOptions): Promise<CpuinfoVerdict> {
  const { args, logPath } = cpuinfoArgs('check', opts);
  try {
    await runCriu(`criu cpuinfo check of ${opts.dir}`, args, logPath, opts);
    return { ok: true };
  } catch (err) {
    if (!isAgentError(err, 'ECRIU') || typeof err.details?.exitCode !== 'number') throw err;
    const errors = Array.isArray(err.details.errors) ? (err.details.errors as string[]) : [];
    // The log's error lines are "Error (criu/arch/x86/cpu.c:262): cpu: CPU xfeatures has ...": keep what follows the source position.
    const differences = errors.map((line) => line.replace(/^.*?Error \([^)]*\):\s*/, '').trim()).filter((line) => line !== '');
    if (differences.length === 0) {
      throw new AgentError('ECRIU', `${err.message} (and it named no difference)`, { cause: err, details: err.details });
    }
    return { ok: false, differences, logPath };
  }
}
