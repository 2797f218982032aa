// Hashing page files while CRIU writes them. CRIU writes a tree's memory into `pages-<n>.img`
// front to back and never goes back into what it wrote: the image is opened with O_TRUNC when CRIU
// creates it, and pages are appended at the file position by write(2) or splice(2) (CRIU's
// criu/page-xfer.c, write_pages_loc; we pass neither --auto-dedup, which punches holes in parent
// images, nor any other option that rewrites an image). So each CHUNK_BYTES piece (./digest.ts)
// that lies wholly below the file's size is final, and is hashed at once on the hashing threads
// while CRIU goes on (the kernel raises i_size only after the bytes below it are in the page cache,
// which is what a read returns). A file seen with another inode than before was replaced: what was
// hashed of it is dropped and the file is hashed afresh after CRIU. Only page files are followed;
// the other images are small and are hashed when CRIU is done.
//
// Restore and export hash every byte again (./checksums.ts, src/archive), so a file that changed
// after its piece was hashed is refused there, never restored.

import { lstatSync, readdirSync } from 'node:fs';
import { join, relative } from 'node:path';
import { CHUNK_BYTES } from './digest.js';
import { sha256Piece } from './hash-pool.js';

const PAGE_FILE = /^pages-\d+\.img$/;
const POLL_MS = 20;

/** Pieces of one file already being hashed, all of CHUNK_BYTES, from the file's start. */
export interface FollowedFile {
  readonly dev: number;
  readonly ino: number;
  readonly pieces: Promise<string>[];
}

export class ImageFollower {
  private readonly dirs: string[] = [];
  private readonly files = new Map<string, FollowedFile>();
  private readonly timer: NodeJS.Timeout;
  private stopped = false;

  /** `onPiece(bytes)` is told of each piece's bytes once it is hashed; `onScan(bytes)` of the page files' sizes at each look. */
  constructor(
    private readonly root: string,
    private readonly onPiece: (bytes: number) => void = () => undefined,
    private readonly onScan: (bytes: number) => void = () => undefined,
  ) {
    this.timer = setInterval(() => this.scan(), POLL_MS);
    this.timer.unref();
  }

  /** Follows the page files of `dir` (a tree's directory under the root) from now on. */
  follow(dir: string): void {
    this.dirs.push(dir);
  }

  /** Stops looking, after a last look; the pieces under way go on. Keyed by path relative to the root. */
  stop(): ReadonlyMap<string, FollowedFile> {
    if (!this.stopped) {
      this.scan();
      clearInterval(this.timer);
      this.stopped = true;
    }
    return this.files;
  }

  private scan(): void {
    if (this.stopped) return;
    let seen = 0;
    for (const dir of this.dirs) {
      let names: string[];
      try {
        names = readdirSync(dir);
      } catch {
        continue;
      }
      for (const name of names) {
        if (!PAGE_FILE.test(name)) continue;
        const path = join(dir, name);
        let stat;
        try {
          stat = lstatSync(path);
        } catch {
          continue;
        }
        if (!stat.isFile()) continue;
        seen += stat.size;
        const key = relative(this.root, path);
        let file = this.files.get(key);
        if (!file || file.dev !== stat.dev || file.ino !== stat.ino) {
          file = { dev: stat.dev, ino: stat.ino, pieces: [] };
          this.files.set(key, file);
        }
        while ((file.pieces.length + 1) * CHUNK_BYTES <= stat.size) {
          const piece = sha256Piece(path, file.pieces.length * CHUNK_BYTES, CHUNK_BYTES);
          piece.then(
            () => this.onPiece(CHUNK_BYTES),
            () => undefined, // its error is the checksums' to report, when they take the piece
          );
          file.pieces.push(piece);
        }
      }
    }
    if (this.dirs.length > 0) this.onScan(seen);
  }
}
