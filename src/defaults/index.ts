// What agentd and agentctl assume when nobody says otherwise, in one place both can load: agentctl
// must not pull in the daemon (that doubles its start, 0.15 -> 0.28 s here) just to learn these.
// Nothing here imports another folder.

/** The version agentd and agentctl report: package.json's. */
export { packageVersion } from './version.js';
