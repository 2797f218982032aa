// What agentd and agentctl assume when nobody says otherwise, in one place every layer can load:
// agentctl must not pull in the daemon (that doubles its start, 0.15 -> 0.28 s here) just to learn
// these. systemd/agentd.socket, agentd.service, the tmpfiles.d entry and scripts/setup.sh repeat the
// paths; test/systemd/units.test.ts checks that they agree. Nothing here imports another folder.

/** The version agentd and agentctl report: package.json's. */
export { packageVersion } from './version.js';

/** agentd's run directory: its CHECKPOINTING lock files live in locks/ below it (docs/lock.md). */
export const DEFAULT_RUN_DIR = '/run/agentd';

/** The Unix socket agentd listens on and agentctl connects to. */
export const DEFAULT_SOCKET = `${DEFAULT_RUN_DIR}/agentd.sock`;

/** The image root checkpoints go to unless a request names another allowed one. */
export const DEFAULT_IMAGES_DIR = '/var/lib/agentd/checkpoints';
