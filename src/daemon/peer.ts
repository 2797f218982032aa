// Who is on the other end of a connection: SO_PEERCRED on the accepted socket's fd, read once when
// the connection arrives. Node exposes the fd only on its internal handle; when it is missing (or
// koffi cannot load), the peer is simply unknown and logs omit it.

import type { Socket } from 'node:net';
import { SOL_SOCKET, SO_PEERCRED, libc } from './libc.js';

export interface PeerCredentials {
  readonly pid: number;
  readonly uid: number;
  readonly gid: number;
}

const peers = new WeakMap<Socket, PeerCredentials>();

function socketFd(socket: Socket): number | undefined {
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

export function peerOf(socket: Socket): PeerCredentials | undefined {
  return peers.get(socket);
}
