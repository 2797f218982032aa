// Restart ordering (the protocol of the 2009 in-kernel checkpoint/restart, in user space; docs/restart.md):
// the saved order of a checkpoint's participants is the order they restore in, whatever order they arrive in.
//  - runCoordinator / joinRestart: the multi-process protocol over a Unix socket (protocol.ts).
//  - restoreInOrder: the same ordering for steps in one process (process trees restored by CRIU).

export { runCoordinator, DEFAULT_JOIN_TIMEOUT_MS, type CoordinatorOptions, type RestartEvent, type RestartReport } from './coordinator.js';
export { joinRestart, type JoinOptions } from './participant.js';
export { restoreInOrder, type RestoreStep, type RestoreInOrderOptions, type RestoreInOrderReport } from './restore-in-order.js';
export { validateParticipants, type Participant } from './saved-order.js';
