// Running systemctl and busctl for this folder: one argument array, never a shell, output as text.

import { createRequire } from 'node:module';

// Loaded when asked for, not at import: agentctl imports this folder for every command, and most
// never ask systemd anything (docs/bench.md, "agentctl start-up"). With require, not import():
// agentctl's bundle runs from V8's code cache, where a dynamic import() has no callback.
export const childProcess = () => createRequire(import.meta.url)('node:child_process') as typeof import('node:child_process');

/** COMMAND's standard output; rejects with an Error whose message is the first line of its stderr (or of the spawn error). */
export function execText(command: string, args: readonly string[], timeoutMs: number): Promise<string> {
  return new Promise((resolve, reject) => {
    childProcess().execFile(command, args, { timeout: timeoutMs, encoding: 'utf8' }, (err, out, errOut) => {
      if (err) reject(new Error((errOut || err.message).trim().split('\n')[0], { cause: err }));
      else resolve(out);
    });
  });
}
