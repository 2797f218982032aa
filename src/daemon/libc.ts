// The few libc calls Node does not offer: sending an AF_UNIX datagram (sd_notify) and reading a
// connection's peer credentials (SO_PEERCRED). The tests' own sockets (test/daemon/sockets.ts) bind
// and receive with bindings of their own.
// Loaded lazily through koffi so that a host where it cannot load still runs the agent without them.

import { endianness } from 'node:os';
import koffi from 'koffi';

export const AF_UNIX = 1;
export const SOCK_DGRAM = 2;
export const SOCK_CLOEXEC = 0o2000000;
export const SOL_SOCKET = 1;
export const SO_PEERCRED = 17;

/** sizeof(struct sockaddr_un): a 2-byte family and 108 bytes of path. */
const SUN_PATH_OFFSET = 2;
const SUN_PATH_MAX = 108;

export interface Libc {
  socket(domain: number, type: number, protocol: number): number;
  sendto(fd: number, buf: Buffer, len: number, flags: number, addr: Buffer, addrLen: number): number;
  getsockopt(fd: number, level: number, name: number, value: Uint32Array, len: Uint32Array): number;
  close(fd: number): number;
  errno(): number;
}

let cached: Libc | undefined;

export function libc(): Libc {
  if (cached) return cached;
  const lib = koffi.load('libc.so.6');
  cached = {
    socket: lib.func('int socket(int, int, int)'),
    sendto: lib.func('intptr_t sendto(int, const void *, size_t, int, const void *, uint32_t)'),
    getsockopt: lib.func('int getsockopt(int, int, int, void *, void *)'),
    close: lib.func('int close(int)'),
    errno: () => koffi.errno(),
  };
  return cached;
}

/**
 * A struct sockaddr_un for PATH, and its length. A leading `@` names an abstract socket (systemd
 * writes NOTIFY_SOCKET that way): its first path byte is NUL and the length counts only used bytes.
 */
export function unixAddress(path: string): { addr: Buffer; len: number } {
  const abstract = path.startsWith('@');
  const bytes = Buffer.from(abstract ? path.slice(1) : path);
  const pathLen = bytes.length + 1; // abstract: leading NUL; filesystem: trailing NUL
  if (pathLen > SUN_PATH_MAX) throw new Error(`socket path too long for sockaddr_un (${bytes.length} bytes): ${path}`);
  const addr = Buffer.alloc(SUN_PATH_OFFSET + SUN_PATH_MAX);
  // sa_family_t is a host-endian unsigned short.
  if (endianness() === 'LE') addr.writeUInt16LE(AF_UNIX, 0);
  else addr.writeUInt16BE(AF_UNIX, 0);
  bytes.copy(addr, SUN_PATH_OFFSET + (abstract ? 1 : 0));
  return { addr, len: SUN_PATH_OFFSET + pathLen };
}
