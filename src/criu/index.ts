// CRIU: finding and checking the binary, running dump and restore, reading its logs and stats.
// Nothing here knows about cgroup freezing, the CHECKPOINTING lock or orchestration: callers pass
// a cgroup directory and CRIU does the rest (docs/criu.md says how it behaves,
// docs/criu-selection.md which CRIU is used and why).

export {
  assertCriuWorks,
  checkDirtyTracking,
  findCriu,
  requireWorkingCriu,
  criuSearchPath,
  chooseNetworkLock,
  type CriuInfo,
  type CriuCheck,
  type FindCriuOptions,
  type NetworkLock,
} from './find.js';
export { readSelfTest, SELF_TEST_RECORD, type CriuSelfTest, type SelfTestRecord } from './self-test.js';
export { runCriu, criuEnv, criuFailure, type CriuRunOptions, type CriuRunResult } from './run.js';
/** The lock a dump needs: `skip` for a tree holding no TCP socket (./network-lock.ts). */
export { networkLockFor, knowsSkip, type DumpNetworkLock } from './network-lock.js';
export { runCriuDump, dumpArgs, checkLogLevel, DUMP_LOG_LEVEL, type CriuDumpOptions } from './dump.js';
/** Pre-dumps of a running tree with memory tracking, for a final dump of only what changed (docs/criu.md). */
export { runCriuPreDump, preDumpArgs, type CriuPreDumpOptions } from './dump.js';
export {
  runCriuRestore,
  restoreArgs,
  removeCgroupYards,
  type CriuRestoreOptions,
  type CriuRestoreResult,
  type CriuCgroupRoot,
  type ManageCgroupsMode,
} from './restore.js';
export { readDumpStats, readRestoreStats, decodeStatsFile, type DumpStats, type RestoreStats } from './stats.js';
export {
  createdCgroupDirs,
  criuErrorLines,
  failureCode,
  knownMismatch,
  knownRefusal,
  logFacts,
  olderThan,
  versionNumbers,
  type TracerLookup,
} from './log.js';
/** What CRIU records of the dumping host's CPU, and its check of that record on a restoring host. */
export { dumpCpuinfo, checkCpuinfo, CPUINFO_IMAGE, type CpuinfoOptions, type CpuinfoVerdict } from './cpuinfo.js';
/** Stopping a dump only while CRIU holds no task (docs/criu-faults.md), and what it held. */
export { stopCriuSafely, tasksTracedBy, CRIU_HUNG_AFTER_MS, type SafeStopResult, type HeldTask } from './stop.js';
/** Restoring into a new PID namespace held by an init of ours (docs/pid-namespace.md). */
export { PidNamespace, type NamespacedPid, type NamespaceRestoreResult } from './pid-namespace.js';
export { startCriuRestoreOnTerminal, type CriuTerminalRestoreOptions, type CriuTerminalRestore } from './terminal.js';
