// The init (pid 1) of a PID namespace that agentd restores a checkpoint into; run by `unshare
// --pid --fork --mount --mount-proc` from src/criu/pid-namespace.ts, never by hand.
//
// A namespace's init has two duties: it is the parent every orphan of the namespace is given to,
// so it must reap them (a zombie keeps its pid until reaped), and its death ends the namespace
// (the kernel SIGKILLs every other process in it). So this program:
// 1. says "ready" on stdout once it runs (agentd then runs CRIU in its namespaces with nsenter);
// 2. waits, doing nothing, until agentd closes its stdin: the restore is over (or agentd is gone);
// 3. then reaps every child it is given, blocking in waitpid(-1), and exits 0 when it has no child
//    left: the restored job has ended, every process of it, including any it left behind.
// It never exits while a process of its namespace runs; SIGKILL from outside is the only way to
// end the namespace early, and that ends the job too (agentd does so when a restore fails).

import { once } from 'node:events';
import koffi from 'koffi';

const ECHILD = 10;
const EINTR = 4;

async function main(): Promise<void> {
  const libc = koffi.load('libc.so.6');
  const waitpid = libc.func('int waitpid(int pid, _Out_ int *status, int options)') as (
    pid: number,
    status: number[],
    options: number,
  ) => number;
  process.stdout.write('ready\n');
  process.stdin.resume();
  process.stdin.on('data', () => undefined);
  await Promise.race([once(process.stdin, 'end'), once(process.stdin, 'close'), once(process.stdin, 'error')]);
  process.stdout.end();
  process.stdin.destroy();
  const status = [0];
  for (;;) {
    // Blocking is right here: nothing else is left for this process to do.
    if (waitpid(-1, status, 0) > 0) continue;
    const errno = koffi.errno();
    if (errno === EINTR) continue;
    process.exit(errno === ECHILD ? 0 : 1);
  }
}

void main();
