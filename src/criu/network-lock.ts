// Which network lock a dump needs. CRIU locks a TCP socket only when it has a peer; a listener, or
// a socket never connected, is saved as it is (docs/criu.md, "Established TCP connections"). Yet
// its nftables lock is set up for every dump in the host's network namespace, whatever the tree
// holds: a table created through libnftables before anything is dumped and deleted at the end,
// both while the tasks are held.
// Measured here (CRIU 4.2.1, the bench's 20-process tree, no sockets): CRIU's frozen_time 339 to 367
// ms with it against 42 to 65 ms with `--network-lock skip` (docs/bench.md, "2026-12-03: the network
// lock"). So a tree with no connection to lock is dumped with `skip`, and any doubt keeps the
// agent's lock.

import { readNetNamespace, readSocketInodes, readSocketTable, readTcpSockets, type SocketTable } from '../proc/index.js';
import type { CriuInfo, NetworkLock } from './find.js';
import { olderThan } from './log.js';

/** What a dump is given as --network-lock: the agent's lock, `skip`, or null for CRIU's default. */
export type DumpNetworkLock = NetworkLock | 'skip' | null;

/** `--network-lock skip` is CRIU 3.19's (Debian 12 has 3.17.1, which refuses the word). */
const SKIP_SINCE = '3.19';

/** Whether this CRIU version takes `--network-lock skip`. */
export function knowsSkip(version: string): boolean {
  return !olderThan(version, SKIP_SINCE);
}

// The kernel's tables of sockets, in the order they are looked in (the likeliest first, so that a
// tree holding only Unix sockets, such as a service whose output goes to the journal, costs one
// read). CRIU locks none of these but a TCP socket with a peer. A socket found in no table (a
// family they do not list, or a TCP socket already closed and so unhashed) keeps the lock.
const TABLES: readonly (SocketTable | 'tcp')[] = ['unix', 'tcp', 'udp', 'udp6', 'netlink', 'raw', 'raw6', 'packet', 'udplite', 'udplite6'];

/**
 * The lock for a dump of the processes `pids`, read while they are frozen (so that none can
 * connect meanwhile): `skip` when this CRIU knows the word, every process is in this agent's
 * network namespace (CRIU, its child, then dumps no namespace and locks only connections), and no
 * process holds a TCP socket with a peer, nor a socket of a kind the kernel's tables do not list;
 * the agent's lock otherwise. A process that is gone counts as holding nothing: CRIU reports it.
 */
export function networkLockFor(criu: Pick<CriuInfo, 'version' | 'networkLock'>, pids: readonly number[]): DumpNetworkLock {
  if (!knowsSkip(criu.version)) return criu.networkLock;
  const own = readNetNamespace('self');
  // Every process looked at is in our namespace, so each table is read once, when first needed.
  const read = new Map<SocketTable | 'tcp', Map<number, boolean>>();
  const table = (pid: number, name: SocketTable | 'tcp'): Map<number, boolean> => {
    let inodes = read.get(name);
    if (!inodes) {
      // inode -> whether CRIU locks it
      inodes =
        name === 'tcp'
          ? new Map(readTcpSockets(pid).map((s) => [s.inode, s.remotePort !== 0]))
          : new Map([...readSocketTable(pid, name)].map((inode) => [inode, false]));
      read.set(name, inodes);
    }
    return inodes;
  };
  for (const pid of pids) {
    const ns = readNetNamespace(pid);
    if (ns === undefined) continue;
    if (own === undefined || ns !== own) return criu.networkLock;
    let pending = readSocketInodes(pid) ?? [];
    for (const name of TABLES) {
      if (pending.length === 0) break;
      const inodes = table(pid, name);
      if (pending.some((inode) => inodes.get(inode) === true)) return criu.networkLock;
      pending = pending.filter((inode) => !inodes.has(inode));
    }
    if (pending.length > 0) return criu.networkLock;
  }
  return 'skip';
}
