// Faults placed at exact moments of a real CRIU dump, for tests that must pass or fail the same way
// every run. fixtures/faults/strace-criu.sh runs the real CRIU under strace, which delays (parks) or
// kills CRIU at its Nth ptrace(2) call. Which N is which moment is read off a reference dump of the
// same workload: CRIU's sequence of ptrace requests for a given process is the same run after run
// (docs/criu-faults.md has the measured sequence and which of its moments are fatal to the task).

import { execFileSync, spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { tmpdir } from 'node:os';
import { FIXTURES } from './lab.js';

/** The stand-in criu binary: the real one under strace. */
export const STRACED_CRIU = join(FIXTURES, 'faults', 'strace-criu.sh');

/** The environment strace-criu.sh reads: the real CRIU and the fault for every run, e.g. "delay_enter=1500000:when=27". */
export function injectionEnv(realCriu: string, inject: string): Record<string, string> {
  return { AGENTD_TEST_CRIU: realCriu, AGENTD_TEST_CRIU_INJECT: inject };
}

/**
 * A plan for strace-criu.sh (its environment variable AGENTD_TEST_CRIU_PLAN names the file, or
 * AGENTD_TEST_CRIU_RESTORE_PLAN for a plan of `criu restore` runs): one step per CRIU run of that
 * command, in order: "-" (no fault), "inject:SPEC", "log:PATH" or "inject:SPEC log:PATH".
 */
export class CriuPlan {
  constructor(
    readonly file: string,
    readonly command: 'dump' | 'restore' = 'dump',
  ) {
    writeFileSync(file, '');
  }
  env(realCriu: string): Record<string, string> {
    return { AGENTD_TEST_CRIU: realCriu, [this.command === 'dump' ? 'AGENTD_TEST_CRIU_PLAN' : 'AGENTD_TEST_CRIU_RESTORE_PLAN']: this.file };
  }
  set(...steps: string[]): void {
    writeFileSync(this.file, steps.map((s) => s + '\n').join(''));
  }
}

/** The ptrace requests (PTRACE_SEIZE, ...) in a log strace wrote with `-e trace=ptrace`, in order. */
export function readPtraceLog(log: string): string[] {
  return readFileSync(log, 'utf8')
    .split('\n')
    .map((line) => /^ptrace\((PTRACE_[A-Z_]+)/.exec(line)?.[1])
    .filter((r): r is string => r !== undefined);
}

/** The ptrace requests of one `criu ARGS` run, in order, as strace saw them. */
export function ptraceRequests(realCriu: string, args: readonly string[]): string[] {
  const dir = mkdtempSync(join(tmpdir(), 'agentd-strace-'));
  const log = join(dir, 'strace.log');
  try {
    execFileSync('strace', ['-o', log, '-qq', '-e', 'trace=ptrace', realCriu, ...args], {
      env: { ...process.env, CRIU_FAULT: '130' },
      stdio: 'ignore',
    });
    return readPtraceLog(log);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

/** The moments of a dump, as 1-based indices into its ptrace requests (strace's `when=`). */
export interface DumpMoments {
  /** The first PTRACE_SEIZE: CRIU holds no task of the dump yet. */
  readonly beforeSeize: number;
  /**
   * Right after CRIU's first injected syscall ran in the task (the PTRACE_GETSIGINFO after the
   * first PTRACE_CONT), before CRIU puts the task's registers back: fatal if CRIU dies here.
   */
  readonly inInjectedSyscall: number;
  /** The first PTRACE_DETACH: CRIU has taken its parasite out again and lets the tasks go. */
  readonly atDetach: number;
}

export function dumpMoments(requests: readonly string[]): DumpMoments {
  const at = (i: number, what: string): number => {
    if (i < 0) throw new Error(`no ${what} in CRIU's ptrace requests: ${requests.join(' ')}`);
    return i + 1;
  };
  const seize = requests.indexOf('PTRACE_SEIZE');
  const injected = requests.findIndex((r, i) => i > seize && r === 'PTRACE_GETSIGINFO' && requests[i - 1] === 'PTRACE_CONT');
  return {
    beforeSeize: at(seize, 'PTRACE_SEIZE'),
    inInjectedSyscall: at(injected, 'injected syscall (PTRACE_CONT then PTRACE_GETSIGINFO)'),
    atDetach: at(requests.indexOf('PTRACE_DETACH', injected), 'PTRACE_DETACH'),
  };
}

/**
 * Where a run logged with "inject:delay_enter=...:when=N log:PATH" is parked: strace writes each call
 * as it enters it and finishes the line when it returns, so a CRIU held at its Nth call has logged N
 * ptrace calls, the last one unfinished. The call number, or undefined while CRIU is not parked.
 * Unlike a look at the task (which a busy machine can catch in the same state for an instant at
 * another call), this cannot be wrong about where CRIU is.
 */
export function parkedAtCall(log: string): number | undefined {
  let text: string;
  try {
    text = readFileSync(log, 'utf8');
  } catch {
    return undefined;
  }
  const lines = text.split('\n').filter((line) => line.startsWith('ptrace('));
  const last = lines.at(-1);
  return last !== undefined && !/\) += /.test(last) ? lines.length : undefined;
}

/**
 * Whether a CRIU killed at its last logged ptrace call (the log of a run with an injected SIGKILL
 * ends at the call the signal came on) died inside one of its injected syscalls: after a
 * PTRACE_CONT that ran one (CRIU then reads the stop with PTRACE_GETSIGINFO) and before the
 * PTRACE_SETREGSET that gives the task its registers back. The task then dies on CRIU's trap
 * (docs/criu-faults.md). The absolute call number of that window can shift between runs of the same
 * tree (a busy machine changes how often CRIU must wait), so tests read where a kill landed here
 * rather than trust the number they aimed at.
 */
export function killedInsideInjectedSyscall(requests: readonly string[]): boolean {
  const killedAt = requests.length - 1;
  for (let i = killedAt; i > 0; i--) {
    if (requests[i] === 'PTRACE_SETREGSET' && i < killedAt) return false;
    if (requests[i] === 'PTRACE_GETSIGINFO' && requests[i - 1] === 'PTRACE_CONT') return true;
  }
  return false;
}

/**
 * Whether this process may give a child OOM protection (a negative oom_score_adj needs
 * CAP_SYS_RESOURCE, which some sandboxes withhold from root): false, or the reason it may not.
 */
export function oomProtectionRefused(): string | false {
  try {
    writeFileSync(`/proc/self/oom_score_adj`, readFileSync('/proc/self/oom_score_adj', 'utf8').trim());
    const probe = spawnSync('sh', ['-c', 'echo -1000 > /proc/self/oom_score_adj'], { stdio: 'ignore' });
    return probe.status === 0 ? false : 'the kernel refuses a negative oom_score_adj here (no CAP_SYS_RESOURCE in this sandbox)';
  } catch (err) {
    return `cannot write oom_score_adj: ${(err as Error).message}`;
  }
}

/** `pid`'s process group and OOM score adjustment, from /proc. */
export function groupAndOomScore(pid: number): { pgid: number; oomScoreAdj: number } {
  const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
  const pgid = Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[2]);
  return { pgid, oomScoreAdj: Number(readFileSync(`/proc/${pid}/oom_score_adj`, 'utf8').trim()) };
}

/** Children of `pid` whose command line starts with `name`'s path (the CRIU under strace). */
export function childNamed(pid: number, name: string): number | undefined {
  try {
    const children = readFileSync(`/proc/${pid}/task/${pid}/children`, 'utf8').split(' ').filter(Boolean).map(Number);
    return children.find((c) => {
      try {
        return readFileSync(`/proc/${c}/cmdline`, 'utf8').split('\0')[0] === name;
      } catch {
        return false;
      }
    });
  } catch {
    return undefined;
  }
}
