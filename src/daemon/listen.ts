// Where the API listens: the socket systemd passed (socket activation), or a Unix socket we bind at
// the configured path. Never TCP. A bound socket is created 0660 (the umask is narrowed around
// bind, so it is never reachable with wider modes, not even for a moment), owned by root and by the
// group `agentd` when that group exists.

import { execFileSync } from 'node:child_process';
import { chmodSync, chownSync, lstatSync, mkdirSync, unlinkSync } from 'node:fs';
import type { Server } from 'node:http';
import { connect } from 'node:net';
import { dirname } from 'node:path';
import { AgentError, systemErrno } from '../errors/index.js';
import { inheritedListenFd } from './activation.js';

const SOCKET_MODE = 0o660;
const SOCKET_GROUP = 'agentd';

export interface Listening {
  readonly path: string;
  /** The socket came from systemd (LISTEN_FDS); its mode and owner are agentd.socket's business. */
  readonly activated: boolean;
  /** The group the socket was given, when we bound it and the group exists. */
  readonly group?: string;
}

function listenOn(server: Server, target: string | { fd: number }): Promise<void> {
  return new Promise((resolve, reject) => {
    const onError = (err: Error) => reject(err);
    server.once('error', onError);
    server.listen(target, () => {
      server.off('error', onError);
      resolve();
    });
  });
}

/** The gid of a group, through NSS (getent), or undefined when there is no such group. */
export function groupId(name: string): number | undefined {
  try {
    const line = execFileSync('getent', ['group', name], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] });
    const gid = Number(line.split(':')[2]);
    return Number.isInteger(gid) ? gid : undefined;
  } catch {
    return undefined;
  }
}

function isListening(path: string): Promise<boolean> {
  return new Promise((resolve) => {
    const probe = connect(path);
    probe.once('connect', () => {
      probe.destroy();
      resolve(true);
    });
    probe.once('error', () => resolve(false));
  });
}

/**
 * A socket file left by an agent that died is removed; a live agent's socket, or anything that is
 * not a socket, is never touched.
 */
async function clearStaleSocket(path: string): Promise<void> {
  let st;
  try {
    st = lstatSync(path);
  } catch (err) {
    if (systemErrno(err) === 'ENOENT') return;
    throw err;
  }
  if (!st.isSocket()) throw new AgentError('EINVAL', `refusing to listen on ${path}: it exists and is not a socket`);
  if (await isListening(path)) {
    throw new AgentError('EBUSY', `another agent is already listening on ${path}; stop it first or pick another --socket`);
  }
  unlinkSync(path);
}

export async function listenApi(server: Server, socketPath: string): Promise<Listening> {
  const fd = inheritedListenFd(process.env);
  if (fd !== undefined) {
    await listenOn(server, { fd });
    return { path: socketPath, activated: true };
  }
  mkdirSync(dirname(socketPath), { recursive: true, mode: 0o755 });
  await clearStaleSocket(socketPath);
  const previous = process.umask(0o777 & ~SOCKET_MODE);
  try {
    await listenOn(server, socketPath);
  } finally {
    process.umask(previous);
  }
  chmodSync(socketPath, SOCKET_MODE);
  const gid = groupId(SOCKET_GROUP);
  if (gid !== undefined && process.getuid?.() === 0) {
    chownSync(socketPath, 0, gid);
    return { path: socketPath, activated: false, group: SOCKET_GROUP };
  }
  return { path: socketPath, activated: false };
}
