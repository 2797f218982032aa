// The agentd daemon: the HTTP API on a Unix socket, systemd integration (socket activation, sd_notify,
// watchdog), logging, metrics and host facts. agentctl talks to it; nothing below imports it.

export { startDaemon, type Daemon, type DaemonOptions } from './daemon.js';
export { main } from './main.js';
export { HTTP_STATUS } from './http-status.js';
export { MAX_BODY_BYTES } from './request.js';
export { NDJSON_TYPE } from './streaming.js';
export type { HostFacts } from './host.js';
