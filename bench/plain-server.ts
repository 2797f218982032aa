// The throughput baseline: node:http on a Unix socket and nothing else. Every GET answers the
// cgroup's freezer state read from the kernel (one synchronous read of a file kept open), as JSON.
// What agentd's state route does beyond this (routing, validation, path resolution, the lock probe,
// logging, metrics) is what the ratio against this server shows.
//
//   node dist/bench/plain-server.js SOCKET v1|v2 CGROUP_DIR

import { openSync, readSync } from 'node:fs';
import { createServer } from 'node:http';
import { join } from 'node:path';

const [socket, hierarchy, dir] = process.argv.slice(2);
if (!socket || !dir || (hierarchy !== 'v1' && hierarchy !== 'v2')) {
  process.stderr.write('usage: plain-server SOCKET v1|v2 CGROUP_DIR\n');
  process.exit(2);
}
const fd = openSync(join(dir, hierarchy === 'v1' ? 'freezer.state' : 'cgroup.events'), 'r');
const buffer = Buffer.alloc(4096);

function state(): string {
  const text = buffer.toString('utf8', 0, readSync(fd, buffer, 0, buffer.length, 0));
  if (hierarchy === 'v1') return text.trim();
  return /^frozen 1$/m.test(text) ? 'FROZEN' : 'THAWED';
}

const server = createServer((req, res) => {
  req.resume();
  req.on('end', () => {
    const body = JSON.stringify({ cgroup: dir, state: state() }) + '\n';
    res.writeHead(200, { 'Content-Type': 'application/json; charset=utf-8', 'Content-Length': Buffer.byteLength(body) });
    res.end(body);
  });
});
server.listen(socket, () => process.stdout.write('ready\n'));
process.on('SIGTERM', () => server.close(() => process.exit(0)));
