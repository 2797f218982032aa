// Whether a checkpoint may be restored on this host: what CRIU needs to match between the host that
// dumped it and the one restoring it (docs/pid-namespace.md, "Before a restore").
//
// - CRIU's version. Images are protobuf: a newer CRIU reads an older one's images (it keeps old
//   fields), an older one may not understand what a newer one wrote, and a new major version is
//   where CRIU allows itself to change image formats. Refused: another major version, or an older
//   CRIU than the one that dumped.
// - The CPU. Restored processes resume with the registers and the xsave state they were dumped
//   with, and code that chose its instructions at start (CPUID) keeps using them: on a CPU lacking
//   one, the process dies of SIGILL later, or CRIU fails to load its FPU state. `criu cpuinfo
//   check` says whether this CPU can run what the dumping one could. Refused on a mismatch.
// - The kernel release. CRIU checks the kernel features it needs itself (`criu check`, and the
//   restore fails loudly without one); a different release alone is a warning in the answer.
//
// With `force`, the two refusals become warnings too: `criu restore` reads neither the dumping
// CRIU's version nor cpuinfo.img, so it proceeds; what then happens is on the operator.
//
// A checkpoint written before these were recorded has no cpuinfo.img: its CPU is not checked, and
// the answer says so.

import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import { release } from 'node:os';
import { join } from 'node:path';
import { checkCpuinfo, CPUINFO_IMAGE, dumpCpuinfo, versionNumbers, olderThan, type CriuInfo } from '../criu/index.js';
import { AgentError } from '../errors/index.js';
import type { HostRecord, Manifest } from './types.js';

// What `criu cpuinfo dump` wrote, per CRIU binary and version: the kernel's view of the CPU (CPUID
// words, xsave mask) is fixed from boot, so every later checkpoint of this agent gets the same
// bytes without another CRIU start (0.06 s each on a quiet host, docs/pid-namespace.md).
const cpuinfoBytes = new Map<string, Buffer>();

/** Writes this host's cpuinfo.img into the checkpoint directory; the manifest names it (and checksums it with the rest). */
export async function recordHost(criu: CriuInfo, checkpointDir: string, timeoutMs: number, signal?: AbortSignal): Promise<HostRecord> {
  const key = `${criu.path}\0${criu.version}`;
  const known = cpuinfoBytes.get(key);
  if (known) {
    writeFileSync(join(checkpointDir, CPUINFO_IMAGE), known, { mode: 0o600, flag: 'wx' });
  } else {
    await dumpCpuinfo({ criuPath: criu.path, dir: checkpointDir, timeoutMs, signal });
    cpuinfoBytes.set(key, readFileSync(join(checkpointDir, CPUINFO_IMAGE)));
  }
  return { cpuinfo: CPUINFO_IMAGE };
}

/** One thing that differs between the dumping host and this one. */
export interface Difference {
  readonly what: 'criu' | 'cpu' | 'kernel';
  readonly message: string;
}

/** Why the CRIU versions rule out a restore, or undefined when they do not. */
export function criuVersionProblem(dumpedWith: string, restoringWith: string): string | undefined {
  const [dumpMajor] = versionNumbers(dumpedWith);
  const [hereMajor] = versionNumbers(restoringWith);
  if (dumpMajor === undefined || hereMajor === undefined) return undefined; // unparsable: CRIU will say
  if (dumpMajor !== hereMajor) {
    return `the checkpoint was dumped by CRIU ${dumpedWith} and this host has CRIU ${restoringWith}: another major version may not read its images`;
  }
  if (olderThan(restoringWith, dumpedWith)) {
    return `the checkpoint was dumped by CRIU ${dumpedWith} and this host has the older CRIU ${restoringWith}, which may not read what the newer one wrote`;
  }
  return undefined;
}

export interface CompatOptions {
  /** Restore despite a CRIU or CPU difference: those become warnings. */
  readonly force?: boolean;
  /** Where CRIU's check log goes (the restore's work dir). */
  readonly workDir: string;
  readonly timeoutMs: number;
  readonly signal?: AbortSignal;
}

/**
 * Checks the checkpoint against this host. Throws ECRIU naming every refused difference (unless
 * force); returns the warnings for the answer: a different kernel, anything forced, a checkpoint
 * too old to have its CPU recorded.
 */
export async function checkCompat(manifest: Manifest, dir: string, criu: CriuInfo, options: CompatOptions): Promise<string[]> {
  const refused: Difference[] = [];
  const warnings: string[] = [];
  const criuProblem = manifest.criuVersion ? criuVersionProblem(manifest.criuVersion, criu.version) : undefined;
  if (criuProblem) refused.push({ what: 'criu', message: criuProblem });
  const cpuinfo = manifest.host?.cpuinfo;
  if (cpuinfo === undefined || !existsSync(join(dir, cpuinfo))) {
    warnings.push(
      `checkpoint ${manifest.id} has no record of its CPU (taken before agentd recorded one): this CPU was not checked against it`,
    );
  } else {
    const verdict = await checkCpuinfo({
      criuPath: criu.path,
      dir,
      workDir: options.workDir,
      timeoutMs: options.timeoutMs,
      signal: options.signal,
    });
    if (!verdict.ok) {
      refused.push({
        what: 'cpu',
        message: `this CPU lacks what the dumping host's had: criu cpuinfo check says "${verdict.differences.join('; ')}"`,
      });
    }
  }
  if (manifest.kernel && manifest.kernel !== release()) {
    warnings.push(`checkpoint ${manifest.id} was taken on Linux ${manifest.kernel}, this host runs ${release()}`);
  }
  if (refused.length === 0) return warnings;
  if (options.force) return [...refused.map((d) => `forced past: ${d.message}`), ...warnings];
  throw new AgentError(
    'ECRIU',
    `checkpoint ${manifest.id} does not fit this host: ${refused.map((d) => d.message).join('; ')}. ` +
      `Nothing was changed; \`criu restore\` itself checks neither, so --force would let it try`,
    { details: { checkpoint: manifest.id, differences: refused, warnings } },
  );
}
