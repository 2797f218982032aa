// agentd's version, from package.json (two levels above both src/daemon and dist/src/daemon's parent).

import { readFileSync } from 'node:fs';

let cached: string | undefined;

export function agentVersion(): string {
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
