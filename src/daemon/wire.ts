// The API's answers as they travel: the JSON bodies of agentd's routes, typed once. agentctl
// imports this module with `import type` only, so it shares the daemon's vocabulary without loading
// any of the daemon's code (its start-up stays small).

/** GET /v1/cgroups/state, and what freeze, thaw and kill answer. */
export type { CgroupStatus } from '../lock/index.js';
/** POST /v1/checkpoints (201), POST /v1/checkpoints/{id}/restore, GET /v1/checkpoints, GET /v1/checkpoints/{id}. */
export type { AfterPolicy, CheckpointListing, CheckpointSummary, Manifest, RestoreSummary } from '../checkpoint/index.js';
/** GET /v1/checkpoints/{id} of a failed attempt; POST /v1/checkpoints/prune. */
export type { FailureRecord, PruneResult } from '../checkpoint/index.js';
/** GET /v1/host. */
export type { HostFacts } from './host.js';
/** POST /v1/checkpoints/{id}/restore with "attach": true adds `terminal`; a --shell-job --after killed checkpoint adds `warnings`. */
export type { HeldTerminalReply } from './terminal-restore.js';
/** GET /v1/terminals, GET /v1/cgroups/terminal. */
export type { TerminalStatus } from '../terminal/index.js';
/** GET /v1/operations: `{operations: [...]}`, also in GET /v1/health. */
export type { OperationView } from './operations.js';
/** What POST /v1/freeze and /v1/thaw answer (200), and the outcomes in their error's details. */
export type { BatchReply, NamedResult, StateBatchReply } from './routes/cgroups.js';
