// /proc/self/mountinfo, one entry per mount (proc(5)): "ID PARENT MAJ:MIN ROOT MOUNTPOINT OPTIONS
// [OPTIONAL...] - FSTYPE SOURCE SUPEROPTIONS". The optional fields vary in number, so what follows
// them is found after the " - " separator.

import { readFileSync } from 'node:fs';

export interface MountEntry {
  /** The directory of the filesystem that is mounted (field 4): "/" for a whole hierarchy. */
  readonly root: string;
  readonly mountPoint: string;
  readonly fsType: string;
  readonly superOptions: readonly string[];
}

/** mountinfo writes space, tab, newline and backslash in paths as \040, \011, \012 and \134. */
export function unescapeMountField(field: string): string {
  return field.replace(/\\([0-7]{3})/g, (_, octal: string) => String.fromCharCode(parseInt(octal, 8)));
}

/** Every mount of a mountinfo text, paths unescaped. */
export function parseMountinfo(text: string): MountEntry[] {
  const entries: MountEntry[] = [];
  for (const line of text.split('\n')) {
    const separator = line.indexOf(' - ');
    if (separator < 0) continue;
    const before = line.slice(0, separator).split(' ');
    const after = line.slice(separator + 3).split(' ');
    const root = before[3];
    const mountPoint = before[4];
    if (root === undefined || mountPoint === undefined) continue;
    entries.push({
      root: unescapeMountField(root),
      mountPoint: unescapeMountField(mountPoint),
      fsType: after[0] ?? '',
      superOptions: (after[2] ?? '').split(','),
    });
  }
  return entries;
}

/** This process's mounts, read now. */
export function readMountinfo(): MountEntry[] {
  return parseMountinfo(readFileSync('/proc/self/mountinfo', 'utf8'));
}
