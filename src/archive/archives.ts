// The archive service the daemon calls: the agent's signing key, export of a good checkpoint as a
// signed archive, import of one into the agent's own image root.

import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import type { Readable, Writable } from 'node:stream';
import { AgentError, fromSystemError } from '../errors/index.js';
import { MANIFEST_FILE, type Checkpointer } from '../checkpoint/index.js';
import { parseManifest, tarBytes } from './format.js';
import { importArchive, type ImportSummary } from './import.js';
import { loadOrCreateSigningKey, type PublicKeyInfo, type SigningKey } from './keys.js';
import { signatureBytes, writeArchive, type ArchiveSource } from './writer.js';
import type { Caller } from './trust.js';

export interface ArchivesOptions {
  readonly checkpointer: Checkpointer;
  /** The agent's private key file (`--key`), made on first start. */
  readonly keyFile: string;
  /** One trusted public key per file (`--trusted-keys`). */
  readonly trustedKeysDir: string;
  /** The largest compressed archive an import reads (`--max-import-bytes`). */
  readonly maxImportBytes: number;
}

/** An export ready to stream: the checkpoint is verified and claimed until it ends. */
export interface PreparedExport {
  readonly id: string;
  /** Length of the uncompressed tar stream, for progress. */
  readonly tarBytes: number;
  /** Sum of the image files' sizes. */
  readonly imageBytes: number;
  /** Streams the archive into `out`; releases the checkpoint however it ends. */
  write(out: Writable, options?: { signal?: AbortSignal; onBytes?: (n: number) => void }): Promise<void>;
  /** Releases the checkpoint without writing (the request failed before it began). */
  release(): void;
}

export class Archives {
  readonly keyFile: string;
  readonly trustedKeysDir: string;
  readonly maxImportBytes: number;
  private readonly checkpointer: Checkpointer;
  private key: SigningKey | undefined;
  private keyError: AgentError | undefined;

  constructor(options: ArchivesOptions) {
    this.checkpointer = options.checkpointer;
    this.keyFile = options.keyFile;
    this.trustedKeysDir = options.trustedKeysDir;
    this.maxImportBytes = options.maxImportBytes;
  }

  /**
   * Loads the signing key, making it when missing. A failure is kept and answered by every request
   * that needs the key (GET /v1/key, exports); the rest of the agent works without it.
   */
  loadKey(): PublicKeyInfo | AgentError {
    try {
      this.key = loadOrCreateSigningKey(this.keyFile);
      this.keyError = undefined;
      return this.key.publicKey;
    } catch (err) {
      this.keyError = err instanceof AgentError ? err : fromSystemError(err, `cannot load the signing key ${this.keyFile}`);
      return this.keyError;
    }
  }

  private signingKey(): SigningKey {
    if (this.key) return this.key;
    const loaded = this.loadKey();
    if (loaded instanceof AgentError) throw loaded;
    return this.key!;
  }

  publicKey(): PublicKeyInfo {
    return this.signingKey().publicKey;
  }

  /** Verifies and claims checkpoint `id` for an export (ENOENT, EBUSY, EIO for a corrupt image before anything is sent). */
  async prepareExport(id: string, requestId: string): Promise<PreparedExport> {
    const key = this.signingKey();
    const opened = await this.checkpointer.openForExport(id, requestId);
    try {
      let manifestBytes: Buffer;
      try {
        manifestBytes = readFileSync(join(opened.dir, MANIFEST_FILE));
      } catch (err) {
        throw fromSystemError(err, `cannot read the manifest of checkpoint ${id}`);
      }
      // What an importer will check, checked here first: an archive no agent would take is not made.
      try {
        parseManifest(manifestBytes);
      } catch (err) {
        throw new AgentError('EINVAL', `checkpoint ${id} cannot be exported: ${(err as Error).message.replace(/^archive refused: /, '')}`);
      }
      const source: ArchiveSource = {
        id,
        dir: opened.dir,
        manifestBytes,
        files: opened.manifest.files,
        createdAt: new Date(opened.manifest.createdAt),
      };
      const signature = signatureBytes(manifestBytes, key);
      return {
        id,
        tarBytes: tarBytes(manifestBytes.length, signature.length, source.files),
        imageBytes: source.files.reduce((sum, f) => sum + f.size, 0),
        write: async (out, options = {}) => {
          try {
            await writeArchive(source, key, out, options);
          } finally {
            opened.release();
          }
        },
        release: opened.release,
      };
    } catch (err) {
      opened.release();
      throw err;
    }
  }

  /** Reads an archive from `input` into a new checkpoint of the agent's own image root. */
  import(input: Readable, caller: Caller, options: { signal?: AbortSignal; onBytes?: (n: number) => void } = {}): Promise<ImportSummary> {
    return importArchive(input, {
      store: this.checkpointer.importRoot(),
      trustedKeysDir: this.trustedKeysDir,
      maxBytes: this.maxImportBytes,
      caller,
      ...options,
    });
  }
}
