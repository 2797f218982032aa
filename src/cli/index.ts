// agentctl: the CLI. It talks to agentd only through its HTTP API on the Unix socket.

export { main, parser } from './main.js';
export { EXIT_CODES, exitCodeFor } from './exit-codes.js';
export { call, type ClientOptions } from './client.js';
