// Bundles agentctl into one file, dist/bin/agentctl.cjs, from tsc's output (so that it is the same
// code the tests import). agentctl is a short-lived process: loading ~100 ES modules one by one
// (resolve, read, link) was the largest part of its start-up, more than yargs itself
// (docs/bench.md, "agentctl start-up"). The bundle is CommonJS, not ESM: an ES module's import of
// a Node built-in builds that module's ESM facade, which reads every export and so runs the lazy
// loaders behind them (measured here: `import('node:crypto')` 68 ms, `require('node:crypto')`
// under 1 ms; node:http 45 against 10 ms). bin/agentctl requires the bundle and falls back to
// dist/src/cli when there is none; where esbuild is not installed (a machine that built with tsc
// alone), an older bundle is removed here so that the fallback, not stale code, runs.

import { existsSync, readdirSync, rmSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const entry = join(root, 'dist', 'src', 'cli', 'index.js');
const outfile = join(root, 'dist', 'bin', 'agentctl.cjs');
// The ESM bundle of earlier builds (bin/agentctl no longer reads it), and V8 code caches of older
// bundles (bin/agentctl would never read them again: their names carry the old bundle's inode,
// size and mtime).
rmSync(join(root, 'dist', 'bin', 'agentctl.js'), { force: true });
for (const name of existsSync(join(root, 'dist', 'bin')) ? readdirSync(join(root, 'dist', 'bin')) : []) {
  if (name.endsWith('.v8cache') || name.includes('.v8cache.')) rmSync(join(root, 'dist', 'bin', name), { force: true });
}

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
// yargs' string-width and cliui's copy of it build an Intl.Segmenter and Unicode-property regular
// expressions (\p{RGI_Emoji}) as they load: 8 and 13 ms of each agentctl start here (docs/bench.md,
// "agentctl start-up"), for widths that only help and usage text need. In the bundle, `import
// stringWidth from 'string-width'` gets a stand-in that loads the real module on its first call
// (a require() of an ES module is one esbuild evaluates lazily). The stand-in has the package's
// one export, its default function: should yargs or cliui import anything else from it, esbuild
// fails the build here ("No matching export"), not agentctl at run time.
const lazyStringWidth = {
  name: 'lazy-string-width',
  setup(build) {
    build.onResolve({ filter: /^string-width$/ }, async (args) => {
      if (args.pluginData?.real) return undefined;
      const real = await build.resolve(args.path, { kind: args.kind, resolveDir: args.resolveDir, pluginData: { real: true } });
      return real.errors.length ? { errors: real.errors } : { path: real.path, namespace: 'lazy-string-width' };
    });
    build.onLoad({ filter: /.*/, namespace: 'lazy-string-width' }, (args) => ({
      contents: [
        'let real;',
        'export default function stringWidth(...args) {',
        `  real ??= require(${JSON.stringify(args.path)});`,
        '  return real.default(...args);',
        '}',
      ].join('\n'),
      resolveDir: dirname(args.path),
      loader: 'js',
    }));
  },
};

// node:assert, which yargs' platform layer imports for two checks that it makes on every run
// (strictEqual, notStrictEqual) and that never fail in practice: loading the module is about 3 ms of
// each start. The stand-in makes the comparison itself (SameValue, as the strict assertions do) and
// hands a failing one to the real assert, so that its error is node's own.
const lazyAssert = {
  name: 'lazy-assert',
  setup(build) {
    build.onResolve({ filter: /^assert$/ }, (args) =>
      /[\\/]node_modules[\\/]yargs[\\/]/.test(args.importer) ? { path: 'assert', namespace: 'lazy-assert' } : undefined,
    );
    build.onLoad({ filter: /.*/, namespace: 'lazy-assert' }, () => ({
      contents: [
        'export function strictEqual(actual, expected, ...rest) {',
        "  if (!Object.is(actual, expected)) require('node:assert').strictEqual(actual, expected, ...rest);",
        '}',
        'export function notStrictEqual(actual, expected, ...rest) {',
        "  if (Object.is(actual, expected)) require('node:assert').notStrictEqual(actual, expected, ...rest);",
        '}',
      ].join('\n'),
      loader: 'js',
    }));
  },
};

await esbuild.build({
  plugins: [lazyStringWidth, lazyAssert],
  entryPoints: [entry],
  outfile,
  bundle: true,
  platform: 'node',
  format: 'cjs',
  target: 'node20',
  // The sources are ES modules that find files beside them through import.meta.url (the package's
  // own package.json, yargs its locales): in the bundle that is the bundle's own URL.
  define: { 'import.meta.url': '__bundleUrl' },
  banner: { js: 'const __bundleUrl = require("node:url").pathToFileURL(__filename).href;' },
  logLevel: 'warning',
});
