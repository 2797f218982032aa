// Who is on the other end of a connection: SO_PEERCRED on the accepted socket's fd, read once when
// the connection arrives. When the fd cannot be had (or koffi cannot load), the peer is simply
// unknown and logs omit it.

import type { Socket } from 'node:net';
import { SOL_SOCKET, SO_PEERCRED, libc } from './libc.js';

export interface PeerCredentials {
  readonly pid: number;
  readonly uid: number;
  readonly gid: number;
}

const peers = new WeakMap<Socket, PeerCredentials>();

/**
 * The accepted socket's file descriptor. Node has no public API for it (net.Socket offers no fd for
 * a connection a server accepted), so this is the one place that reads its private `_handle.fd`;
 * test/daemon/peer.test.ts fails loudly the day a Node release moves it.
 */
export function socketFd(socket: Socket): number | undefined {
  const fd = (socket as unknown as { _handle?: { fd?: unknown } })._handle?.fd;
  return typeof fd === 'number' && fd >= 0 ? fd : undefined;
}

/** Reads and remembers the peer of a freshly accepted connection. */
export function recordPeer(socket: Socket): PeerCredentials | undefined {
  const fd = socketFd(socket);
  if (fd === undefined) return undefined;
  try {
    const c = libc();
    // struct ucred { pid_t pid; uid_t uid; gid_t gid; }: three 32-bit integers.
    // Typed arrays are host-endian, as the kernel writes them.
    const value = new Uint32Array(3);
    const len = new Uint32Array([value.byteLength]);
    if (c.getsockopt(fd, SOL_SOCKET, SO_PEERCRED, value, len) !== 0) return undefined;
    const cred = { pid: value[0], uid: value[1], gid: value[2] };
    peers.set(socket, cred);
    return cred;
  } catch {
    return undefined;
  }
}

/** The peer recordPeer read for this connection, if any. */
export function peerOf(socket: Socket): PeerCredentials | undefined {
  return peers.get(socket);
}
