// Reading the kernel's /proc files that several folders need. Plain parsing, no policy: the lowest
// layer beside src/errors, so any folder may use it.

export { parseProcStat, readProcStat, type ProcStat } from './stat.js';
export { parseMountinfo, readMountinfo, unescapeMountField, type MountEntry } from './mountinfo.js';
export { readArgs, EXEC_SETTLE_MS } from './cmdline.js';
export { readTracerPid, readNsPids, readChildren, readDescendants } from './status.js';
export {
  readSocketInodes,
  readNetNamespace,
  readSocketTable,
  parseSocketTable,
  readTcpSockets,
  parseTcpTable,
  type SocketTable,
  type TcpSocket,
} from './sockets.js';
