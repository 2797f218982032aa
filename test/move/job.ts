// The job moved from one machine to another by test:vm (docs/fleet.md): a counter and a server
// whose data lives only in its memory, started on a source machine (source.test.ts) and restored on
// a second one (target.test.ts). The two halves run in separate boots and meet in a directory of
// the host's (the machines' read-write shares, scripts/vm/vagrant-inside.sh): the archive, the source agent's public
// key and job.json, what the source saw just before the checkpoint.

import { createHash } from 'node:crypto';
import { request } from 'node:http';
import { readFileSync } from 'node:fs';
import { agentctl, type CliResult } from '../daemon/agent.js';

/** The server's port on the guest's loopback: the same on both machines (one network namespace each). */
export const SERVER_PORT = 8471;
/** How many entries of random data the server makes at start: about 5 MiB of its memory. */
export const SERVER_ENTRIES = 20_000;

/**
 * The server, run by Debian's python3 (in the image already: criu depends on it). At start it fills a
 * dict with random values, which exist nowhere but in its memory; GET / answers the whole dict as
 * JSON (keys sorted, so equal data gives equal bytes), GET /count its size, PUT /KEY sets one entry.
 * HTTP/1.0, one connection per request: no connection is open while it waits, so the dump has a
 * listening socket only (no --tcp-established).
 */
export const SERVER_PY = `
import http.server, json, os, sys
data = {'k%05d' % i: os.urandom(32).hex() for i in range(int(sys.argv[2]))}
class Handler(http.server.BaseHTTPRequestHandler):
    def answer(self, value):
        body = json.dumps(value, sort_keys=True, separators=(',', ':')).encode()
        self.send_response(200)
        self.send_header('Content-Type', 'application/json')
        self.send_header('Content-Length', str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def do_GET(self):
        self.answer(data if self.path == '/' else {'count': len(data)})
    def do_PUT(self):
        data[self.path[1:]] = self.rfile.read(int(self.headers['Content-Length'])).decode()
        self.answer({'count': len(data)})
    def log_message(self, *args):
        pass
http.server.HTTPServer(('127.0.0.1', int(sys.argv[1])), Handler).serve_forever()
`;

/** What the source half leaves for the target half (OUT/move/<machine>.json). */
export interface JobRecord {
  readonly machine: string;
  readonly checkpoint: string;
  readonly cgroup: string;
  readonly hierarchy: 'v1' | 'v2';
  /** The counter's file, which the target makes again at the same path and size (CRIU checks it). */
  readonly counterFile: string;
  /** The counter's value once the job was dumped and killed. */
  readonly counterAt: number;
  /** The server's whole data: sha256 of GET /'s body, and its number of entries. */
  readonly serverDigest: string;
  readonly serverEntries: number;
  /** Saved pids: the counter's, the server's. */
  readonly pids: readonly number[];
  readonly imageBytes: number;
  readonly archiveBytes: number;
  readonly checkpointMs: number;
  readonly frozenWindowMs: number;
  readonly exportMs: number;
  readonly publicKeyFingerprint: string;
}

/** One HTTP request to the server, no keep-alive. */
export function http(method: string, path: string, body?: string): Promise<{ status: number; text: string }> {
  return new Promise((resolve, reject) => {
    const req = request({ host: '127.0.0.1', port: SERVER_PORT, method, path, agent: false, headers: { Connection: 'close' } }, (res) => {
      let text = '';
      res.setEncoding('utf8');
      res.on('data', (d: string) => (text += d));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, text }));
      res.on('error', reject);
    });
    req.on('error', reject);
    req.end(body);
  });
}

/** The server's whole data as the digest job.json records. */
export async function serverData(): Promise<{ digest: string; entries: number }> {
  const reply = await http('GET', '/');
  if (reply.status !== 200) throw new Error(`GET / answered ${reply.status}`);
  return { digest: createHash('sha256').update(reply.text).digest('hex'), entries: Object.keys(JSON.parse(reply.text)).length };
}

/** Waits until the server answers (python3 under emulation takes seconds to start). */
export async function waitForServer(timeoutMs = 60_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    try {
      if ((await http('GET', '/count')).status === 200) return;
    } catch {
      // not listening yet
    }
    if (Date.now() > deadline) throw new Error(`the server did not answer on port ${SERVER_PORT} within ${timeoutMs} ms`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

export function counterIn(file: string): number {
  return Number(readFileSync(file, 'utf8').trim() || 'NaN');
}

/** The counter's file as counter.pl writes it: 12 digits and a newline, always 13 bytes. */
export function counterText(value: number): string {
  return `${String(value).padStart(12, '0')}\n`;
}

/**
 * agentctl against the machine's installed agent: the default socket, or AGENTD_SOCKET when set (a
 * rehearsal of both halves on one host, with two agents of its own).
 */
export function ctl(args: string[]): Promise<CliResult> {
  const socket = process.env.AGENTD_SOCKET;
  return agentctl(args, socket ? { env: { AGENTD_SOCKET: socket } } : {});
}
