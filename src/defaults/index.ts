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

/** agentd's state directory: the image root and the signing key live below it. */
export const DEFAULT_STATE_DIR = '/var/lib/agentd';

/** The agent's ed25519 private key, which signs the archives it exports (docs/archive.md). */
export const DEFAULT_SIGNING_KEY = `${DEFAULT_STATE_DIR}/signing-key`;

/** One public key per file: archives signed by these import without --trust. */
export const DEFAULT_TRUSTED_KEYS_DIR = '/etc/agentd/trusted-keys';

/** The largest compressed archive an import reads: 64 GiB. */
export const DEFAULT_MAX_IMPORT_BYTES = 64 * 1024 ** 3;
