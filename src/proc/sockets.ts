// The sockets a process holds (/proc/PID/fd, `socket:[INODE]`) and the kernel's per-namespace
// tables of sockets (/proc/PID/net/*, which list the sockets of the process's network namespace by
// inode), so that a caller can tell what kind each socket is without touching it.

import { readdirSync, readFileSync, readlinkSync } from 'node:fs';

const SOCKET_LINK = /^socket:\[(\d+)\]$/;

/**
 * The inodes of the sockets among the process's open files; undefined when it is gone. Threads
 * share their process's files (CLONE_FILES), so the process's own table is the one read.
 */
export function readSocketInodes(pid: number): number[] | undefined {
  let fds: string[];
  try {
    fds = readdirSync(`/proc/${pid}/fd`);
  } catch {
    return undefined;
  }
  const inodes: number[] = [];
  for (const fd of fds) {
    let target: string;
    try {
      target = readlinkSync(`/proc/${pid}/fd/${fd}`);
    } catch {
      continue; // closed since the listing
    }
    const inode = SOCKET_LINK.exec(target)?.[1];
    if (inode !== undefined) inodes.push(Number(inode));
  }
  return inodes;
}

/** The process's network namespace as the kernel names it (`net:[4026531840]`); undefined when it is gone. */
export function readNetNamespace(pid: number | 'self'): string | undefined {
  try {
    return readlinkSync(`/proc/${pid}/ns/net`);
  } catch {
    return undefined;
  }
}

/** The tables of /proc/PID/net, other than TCP's, that list sockets by inode, and the inode's column. */
const INODE_COLUMN = {
  udp: 9,
  udp6: 9,
  udplite: 9,
  udplite6: 9,
  raw: 9,
  raw6: 9,
  unix: 6,
  netlink: 9,
  packet: 8,
} as const;

export type SocketTable = keyof typeof INODE_COLUMN;

/** The inode column of a /proc/net table's text (its first line is the header). */
export function parseSocketTable(table: SocketTable, text: string): Set<number> {
  const column = INODE_COLUMN[table];
  const inodes = new Set<number>();
  for (const line of text.split('\n').slice(1)) {
    const field = line.trim().split(/\s+/)[column];
    if (field !== undefined && /^\d+$/.test(field)) inodes.add(Number(field));
  }
  return inodes;
}

/**
 * The inodes listed in one table of the process's network namespace; empty when the table does not
 * exist (a protocol this kernel was built without) or the process is gone.
 */
export function readSocketTable(pid: number, table: SocketTable): Set<number> {
  try {
    return parseSocketTable(table, readFileSync(`/proc/${pid}/net/${table}`, 'utf8'));
  } catch {
    return new Set();
  }
}

/** One line of /proc/PID/net/tcp or tcp6. */
export interface TcpSocket {
  readonly inode: number;
  /** The kernel's TCP state number (include/net/tcp_states.h): 1 ESTABLISHED, 7 CLOSE, 10 LISTEN... */
  readonly state: number;
  /** The peer's port; 0 for a socket that has no peer (listening, or never connected). */
  readonly remotePort: number;
}

/** The sockets of a tcp or tcp6 table's text: `sl local rem st ... inode`, addresses as HEX:PORT in hex. */
export function parseTcpTable(text: string): TcpSocket[] {
  const sockets: TcpSocket[] = [];
  for (const line of text.split('\n').slice(1)) {
    const fields = line.trim().split(/\s+/);
    const remote = /:([0-9A-Fa-f]{4})$/.exec(fields[2] ?? '')?.[1];
    if (remote === undefined || !/^[0-9A-Fa-f]+$/.test(fields[3] ?? '') || !/^\d+$/.test(fields[9] ?? '')) continue;
    sockets.push({ inode: Number(fields[9]), state: parseInt(fields[3], 16), remotePort: parseInt(remote, 16) });
  }
  return sockets;
}

/** The TCP sockets, IPv4 and IPv6, of the process's network namespace; empty when it is gone. */
export function readTcpSockets(pid: number): TcpSocket[] {
  return ['tcp', 'tcp6'].flatMap((table) => {
    try {
      return parseTcpTable(readFileSync(`/proc/${pid}/net/${table}`, 'utf8'));
    } catch {
      return [];
    }
  });
}
