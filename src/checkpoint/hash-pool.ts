// sha256 of image files on worker threads, one per core (at most HASH_THREADS): a checkpoint of
// several processes has several page files and they are hashed side by side, and the agent's own
// event loop stays free for other requests meanwhile. sha256 is what Node 20's crypto does fastest
// here (OpenSSL uses the CPU's SHA extensions: about 1 GB/s per core on the reference VM, faster
// than sha1's nearest rival blake2b512 at half that, docs/bench.md), and it is the checksum every
// manifest has always recorded, so restore verifies old and new images alike.
//
// The threads are started by warmHashThreads as a dump begins, so that their start (tens of ms,
// 300 ms for two on a loaded VM) overlaps CRIU's work instead of adding to the checksums' time,
// and ended after IDLE_MS without work, so
// that an idle agent does not carry their memory (each is a V8 isolate, several MB); an idle one
// never keeps the process alive. A thread that dies is replaced and the file it held fails with EIO.
//
// While CRIU runs, the pool may be held to fewer threads (holdHashThreads): CRIU dumps on one
// core, and hashing the pieces it has written (./follow.ts) should take the other cores, not
// CRIU's, since the workload is frozen until CRIU is done. The jobs started while it is held also
// run at nice 19 (./hash-worker.ts), so that on a busy machine they take only CPU nobody else
// wants: CRIU's dump, which keeps the workload stopped, comes first.

import { availableParallelism } from 'node:os';
import { Worker } from 'node:worker_threads';
import { AgentError } from '../errors/index.js';
import type { HashItem, HashReply, HashRequest } from './hash-worker.js';

const HASH_THREADS = 2;
const IDLE_MS = 30_000;

// Small files go to a thread many at a time: a job's round trip to a thread costs more than
// hashing a small file (measured here on a 20-process dump, 148 files, 18 MB: 63 to 98 ms on two
// threads one file per job, against 25 to 53 ms for one thread hashing them all inline). A job
// holds files up to BATCH_BYTES in all (at most BATCH_FILES of them), so that the two threads still
// share a dump of many small files.
const BATCH_BYTES = 4 * 1024 * 1024;
const BATCH_FILES = 256;

interface Waiter {
  readonly item: HashItem;
  readonly resolve: (sha256: string) => void;
  readonly reject: (err: Error) => void;
}

/** What one thread is given at once: one or more files, each settled on its own. */
type Job = readonly Waiter[];

const jobName = (job: Job) => (job.length === 1 ? job[0].item.path : `${job[0].item.path} and ${job.length - 1} more files`);

class HashThread {
  private readonly worker: Worker;
  private job: { id: number; job: Job } | undefined;
  private nextId = 0;
  private idleTimer: NodeJS.Timeout | undefined;
  dead = false;

  constructor(private readonly onIdle: (thread: HashThread) => void) {
    this.worker = new Worker(new URL('./hash-worker.js', import.meta.url));
    this.worker.on('message', (reply: HashReply) => {
      const current = this.job;
      if (!current || current.id !== reply.id) return;
      this.job = undefined;
      this.idle();
      current.job.forEach((waiter, i) => {
        const result = reply.results[i];
        if (result && 'sha256' in result) waiter.resolve(result.sha256);
        else
          waiter.reject(
            Object.assign(new Error(result?.error.message ?? `no digest of ${waiter.item.path}`), { code: result?.error.code ?? 'EIO' }),
          );
      });
      this.onIdle(this);
    });
    const die = (err: Error) => {
      if (this.dead) return;
      this.dead = true;
      const current = this.job;
      this.job = undefined;
      if (current) {
        const failure = new AgentError('EIO', `the hashing thread died while it hashed ${jobName(current.job)}: ${err.message}`);
        for (const waiter of current.job) waiter.reject(failure);
      }
      this.onIdle(this);
    };
    this.worker.on('error', die);
    this.worker.on('exit', (code) => die(new Error(`exit code ${code}`)));
    this.idle();
  }

  private idle(): void {
    this.worker.unref();
    clearTimeout(this.idleTimer);
    this.idleTimer = setTimeout(() => {
      this.dead = true; // before the exit event: no job is given to a thread on its way out
      void this.worker.terminate();
    }, IDLE_MS);
    this.idleTimer.unref();
  }

  get busy(): boolean {
    return this.job !== undefined;
  }

  run(job: Job, background: boolean): void {
    const id = ++this.nextId;
    this.job = { id, job };
    clearTimeout(this.idleTimer);
    this.worker.ref(); // a file in hand keeps the process alive; an idle thread never does
    this.worker.postMessage({ id, items: job.map((w) => w.item), background } satisfies HashRequest);
  }
}

class HashPool {
  private threads: HashThread[] = [];
  private readonly queue: Job[] = [];
  private limit: number;
  private held = false;

  constructor(private readonly size: number) {
    this.limit = size;
  }

  /** At most `threads` jobs at once (at least 1), started at nice 19, until the function returned is called. */
  hold(threads: number): () => void {
    this.limit = Math.max(1, Math.min(this.size, threads));
    this.held = true;
    return () => {
      this.limit = this.size;
      this.held = false;
      this.dispatch();
    };
  }

  get threadCount(): number {
    return this.size;
  }

  warm(): void {
    this.threads = this.threads.filter((t) => !t.dead);
    while (this.threads.length < this.size) this.threads.push(new HashThread(() => this.dispatch()));
  }

  /** Queues the items as one job; a promise per item. */
  sha256(items: readonly HashItem[]): Promise<string>[] {
    const job: Waiter[] = [];
    const promises = items.map((item) => new Promise<string>((resolve, reject) => job.push({ item, resolve, reject })));
    if (job.length > 0) {
      this.queue.push(job);
      this.dispatch();
    }
    return promises;
  }

  private dispatch(): void {
    this.threads = this.threads.filter((t) => !t.dead);
    while (this.queue.length > 0 && this.threads.filter((t) => t.busy).length < this.limit) {
      let thread = this.threads.find((t) => !t.busy);
      if (!thread && this.threads.length < this.size) {
        thread = new HashThread(() => this.dispatch());
        this.threads.push(thread);
      }
      if (!thread) return;
      thread.run(this.queue.shift()!, this.held);
    }
  }
}

let pool: HashPool | undefined;

/**
 * sha256 (hex) of each whole file, hashed on the pool's threads, small ones several to a job; the
 * promise of each file settles with its own digest or its own error (ENOENT, ELOOP for a
 * symlink...). Largest files should be given first: they start first and the small ones fill in
 * beside them. `size` only decides the packing: the whole file is hashed, however long it is.
 */
export function sha256Files(files: readonly { readonly path: string; readonly size: number }[]): Promise<string>[] {
  const promises: Promise<string>[] = [];
  let batch: HashItem[] = [];
  let bytes = 0;
  const flush = () => {
    promises.push(...thePool().sha256(batch));
    batch = [];
    bytes = 0;
  };
  for (const file of files) {
    if (batch.length > 0 && (bytes + file.size > BATCH_BYTES || batch.length >= BATCH_FILES)) flush();
    batch.push({ path: file.path });
    bytes += file.size;
  }
  if (batch.length > 0) flush();
  return promises;
}

/** sha256 (hex) of `length` bytes of a file from `offset`; fails (EIO) if the file ends before. */
export function sha256Piece(path: string, offset: number, length: number): Promise<string> {
  return thePool().sha256([{ path, offset, length }])[0];
}

/** Holds the pool to `threads` jobs at once; the function returned lifts it. */
export function holdHashThreads(threads: number): () => void {
  return thePool().hold(threads);
}

/** How many hashing threads the pool has at most. */
export function hashThreadCount(): number {
  return thePool().threadCount;
}

/** Starts the hashing threads now (if they are not running) so that they are ready when needed. */
export function warmHashThreads(): void {
  try {
    thePool().warm();
  } catch {
    // a thread that cannot start now fails its first file later, with its own error
  }
}

function thePool(): HashPool {
  pool ??= new HashPool(Math.max(1, Math.min(HASH_THREADS, availableParallelism())));
  return pool;
}
