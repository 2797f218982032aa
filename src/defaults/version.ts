// The package's version, from package.json: two levels above src/defaults, three above
// dist/src/defaults. Read once.

import { readFileSync } from 'node:fs';

let cached: string | undefined;

/** package.json's version ("unknown" if it cannot be read). */
export function packageVersion(): string {
  if (cached) return cached;
  for (const rel of ['../../package.json', '../../../package.json']) {
    try {
      const pkg = JSON.parse(readFileSync(new URL(rel, import.meta.url), 'utf8')) as { name?: string; version?: string };
      if (pkg.name === 'agentd' && pkg.version) return (cached = pkg.version);
    } catch {
      // try the next candidate
    }
  }
  return (cached = 'unknown');
}
