// Bundles agentctl into one file, dist/bin/agentctl.js, from tsc's output (so that it is the same
// code the tests import). agentctl is a short-lived process: loading ~100 ES modules one by one
// (resolve, read, link) was the largest part of its start-up, more than yargs itself
// (docs/bench.md, "agentctl start-up"). bin/agentctl runs the bundle and falls back to
// dist/src/cli when there is none; where esbuild is not installed (a machine that built with tsc
// alone), an older bundle is removed here so that the fallback, not stale code, runs.

import { existsSync, rmSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const entry = join(root, 'dist', 'src', 'cli', 'index.js');
const outfile = join(root, 'dist', 'bin', 'agentctl.js');

let esbuild;
try {
  esbuild = await import('esbuild');
} catch {
  rmSync(outfile, { force: true });
  process.stderr.write('bundle-cli: esbuild is not installed; bin/agentctl runs dist/src/cli unbundled\n');
  process.exit(0);
}
if (!existsSync(entry)) {
  process.stderr.write(`bundle-cli: ${entry} is missing: run tsc first\n`);
  process.exit(1);
}
await esbuild.build({
  entryPoints: [entry],
  outfile,
  bundle: true,
  platform: 'node',
  format: 'esm',
  target: 'node20',
  logLevel: 'warning',
});
