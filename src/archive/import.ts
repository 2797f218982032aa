// Importing an archive into the agent's own image root: read and verify it into a fresh
// `.importing-*` directory, then give it a new checkpoint id: its manifest, rewritten with that id
// and where it came from, is written (fsynced) last, and the directory renamed to the id. Anything
// refused or failed removes the directory; an agent that dies meanwhile leaves it to the next
// start's recovery, which removes `.importing-*` as it does `.partial-*`.

import { join } from 'node:path';
import type { Readable } from 'node:stream';
import { AgentError } from '../errors/index.js';
import { MANIFEST_FILE, newCheckpointId, removeTree, writeFileDurably, type ImageStore, type Manifest } from '../checkpoint/index.js';
import { readArchive } from './reader.js';
import { checkCaller, judgeSigner, type Caller, type TrustVerdict } from './trust.js';

/** Room kept free beyond the image itself, as the disk must not be filled to the last block. */
const RESERVE_BYTES = 64 * 1024 * 1024;

export interface ImportSummary {
  readonly id: string;
  readonly dir: string;
  /** The id it had on the agent that exported it. */
  readonly from: string;
  readonly cgroup: string;
  readonly hierarchy: string;
  readonly files: number;
  readonly bytes: number;
  /** `sha256:<hex>` of the signer's key; absent for an unsigned archive. */
  readonly signer?: string;
  /** The trusted-keys file that vouched for it; absent when root passed --trust. */
  readonly trustedBy?: string;
}

export interface ImportOptions {
  readonly store: ImageStore;
  readonly trustedKeysDir: string;
  readonly maxBytes: number;
  readonly caller: Caller;
  readonly signal?: AbortSignal;
  readonly onBytes?: (n: number) => void;
}

export async function importArchive(input: Readable, options: ImportOptions): Promise<ImportSummary> {
  checkCaller(options.caller);
  const { store } = options;
  let dir: string | undefined;
  let verdict: TrustVerdict = {};
  try {
    const head = await readArchive(input, {
      maxBytes: options.maxBytes,
      signal: options.signal,
      onBytes: options.onBytes,
      ready: async (h) => {
        verdict = judgeSigner(h, options.trustedKeysDir, options.caller);
        const needed = h.manifest.files.reduce((sum, f) => sum + f.size, 0) + h.manifestBytes.length;
        const free = store.freeBytes();
        if (free < needed + RESERVE_BYTES) {
          throw new AgentError(
            'ENOSPC',
            `archive of checkpoint ${h.manifest.id} needs ${needed} bytes and ${store.root} has ${free} free (keeping ${RESERVE_BYTES} in reserve)`,
          );
        }
        dir = store.createImporting();
        return dir;
      },
    });
    const id = newCheckpointId();
    const manifest: Manifest = {
      ...head.manifest,
      id,
      imported: { from: head.manifest.id, at: new Date().toISOString(), ...verdict },
    };
    writeFileDurably(join(dir!, MANIFEST_FILE), JSON.stringify(manifest, null, 2) + '\n');
    const final = store.publish(dir!, id);
    dir = undefined;
    return {
      id,
      dir: final,
      from: head.manifest.id,
      cgroup: manifest.cgroup,
      hierarchy: manifest.hierarchy,
      files: manifest.files.length,
      bytes: manifest.files.reduce((sum, f) => sum + f.size, 0),
      ...verdict,
    };
  } finally {
    if (dir !== undefined) await removeTree(dir);
  }
}
