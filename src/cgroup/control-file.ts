// Small cgroup control files kept open and used synchronously: a synchronous pread/pwrite on a
// kept-open fd costs 3-40 µs here, against 0.3-0.5 ms for an awaited fs.promises call (docs/freezer.md).

import { closeSync, openSync, readSync, writeSync, constants } from 'node:fs';
import { AgentError, fromSystemError, systemErrno } from '../errors/index.js';

const BUFFER_SIZE = 4096;
// One read buffer for every control file: each read is synchronous and turned into a string (or
// copied) before it returns, so no two uses can overlap. A buffer per file, as it was, was a 4 KiB
// allocation outside the heap (too large for Node's pool) for each file every request opened.
const SCRATCH = Buffer.allocUnsafe(BUFFER_SIZE);

export class ControlFile {
  private fd: number | undefined;
  private readonly buffer = SCRATCH;

  constructor(
    readonly path: string,
    private readonly cgroupName: string,
    writable: boolean,
  ) {
    try {
      this.fd = openSync(path, writable ? constants.O_RDWR : constants.O_RDONLY);
    } catch (err) {
      throw this.failure(err, `failed to open ${path}`);
    }
  }

  read(): string {
    try {
      const length = readSync(this.openFd(), this.buffer, 0, BUFFER_SIZE, 0);
      return this.buffer.toString('utf8', 0, length);
    } catch (err) {
      throw this.failure(err, `failed to read ${this.path}`);
    }
  }

  /**
   * Reads to the end, for files that can outgrow one buffer, through the shared buffer: a new
   * 64 KiB buffer for every read (as it was) made each state request allocate 128 KiB outside the
   * heap, which the garbage collector gives back late (docs/bench.md). The copies are small and
   * come from Node's buffer pool.
   */
  readAll(): string {
    try {
      const fd = this.openFd();
      const chunks: Buffer[] = [];
      let position = 0;
      for (;;) {
        const length = readSync(fd, this.buffer, 0, BUFFER_SIZE, position);
        if (length === 0) break;
        chunks.push(Buffer.from(this.buffer.subarray(0, length)));
        position += length;
      }
      return Buffer.concat(chunks).toString('utf8');
    } catch (err) {
      throw this.failure(err, `failed to read ${this.path}`);
    }
  }

  write(value: string): void {
    try {
      writeSync(this.openFd(), value, 0);
    } catch (err) {
      throw this.failure(err, `failed to write "${value}" to ${this.path}`);
    }
  }

  close(): void {
    if (this.fd !== undefined) closeSync(this.fd);
    this.fd = undefined;
  }

  private openFd(): number {
    if (this.fd === undefined) throw new AgentError('EIO', `${this.path} was already closed`);
    return this.fd;
  }

  // A removed cgroup shows as ENOENT on open and ENODEV on an fd opened before the rmdir.
  private failure(err: unknown, what: string): AgentError {
    const errno = systemErrno(err);
    if (errno === 'ENOENT' || errno === 'ENODEV') {
      return new AgentError('ENOENT', `cgroup ${this.cgroupName} no longer exists (${what}: ${errno})`, { cause: err });
    }
    return fromSystemError(err, `cgroup ${this.cgroupName}: ${what}`);
  }
}

/** Opens, reads and closes a small control file, with the same error mapping. */
export function readControlFile(path: string, cgroupName: string): string {
  const file = new ControlFile(path, cgroupName, false);
  try {
    return file.read();
  } finally {
    file.close();
  }
}

/** Reads a whole control file that may be large (cgroup.procs with thousands of pids). */
export function readPids(path: string, cgroupName: string): number[] {
  const file = new ControlFile(path, cgroupName, false);
  try {
    return file
      .readAll()
      .split('\n')
      .filter((line) => line !== '')
      .map(Number);
  } finally {
    file.close();
  }
}
