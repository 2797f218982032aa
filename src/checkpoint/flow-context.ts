// What a checkpoint and a restore both work with: the guarded entry to the cgroups, the image root,
// and the CRIU in use.

import type { CriuInfo } from '../criu/index.js';
import type { CgroupControl } from '../lock/index.js';
import type { ImageStore } from './image-store.js';

export interface FlowContext {
  readonly control: CgroupControl;
  readonly store: ImageStore;
  readonly criu: CriuInfo;
  /** How a dump's CRIU is started (CriuRunOptions.wrap): in a systemd scope of its own, under agentd.service. */
  readonly wrapDump?: (argv: readonly string[]) => readonly string[];
  /** Whether a restore's processes become a systemd scope unless the request says otherwise (agentd --restore-scope). */
  readonly restoreScopes?: boolean;
  /** CRIU's -v level for dumps and pre-dumps (src/criu/dump.ts, DUMP_LOG_LEVEL). */
  readonly criuLogLevel?: number;
}
