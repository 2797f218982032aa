// The init (pid 1) of a PID namespace that agentd restores a checkpoint into: a Perl program run by
// `unshare --pid --fork --mount --mount-proc ... perl -e INIT_PROGRAM` from ./pid-namespace.ts.
//
// A namespace's init has two duties: every orphan of the namespace is given to it, so it must reap
// them (a zombie keeps its pid, on the host too, until reaped); and its death ends the namespace
// (the kernel SIGKILLs every other process in it). So the program:
// 1. says "ready" on stdout once it runs (agentd then runs CRIU in its namespaces with nsenter);
// 2. reads its stdin until agentd closes it: the restore is over (or agentd is gone); meanwhile it
//    reaps at each SIGCHLD (without that, the processes of a tree undone after a failed later tree
//    stayed zombies, and the undo waited its full 10 s for their pids to go);
// 3. then reaps every child it is given, blocking in waitpid(-1), and exits 0 when it has no child
//    left: the restored job has ended, every process of it, including any it left behind.
// It never exits while a process of its namespace runs; only SIGKILL from outside ends the
// namespace early, and that ends the job too (agentd does so when a restore fails). As pid 1 it
// gets no signal it has no handler for from inside its namespace, and its only handler is SIGCHLD's.
//
// Why Perl and not Node: the init lives as long as the job. Measured here, a Node init took 40-49 MB
// of resident memory and added 0.6-0.9 s to every restore (its start); this one takes about 5 MB
// and starts in milliseconds. perl-base is an essential package on Debian (the test workloads
// already need it). The numbers are Linux's (EINTR 4, ECHILD 10, WNOHANG 1), so it loads no module.

/** The init's program text, for `perl -e`. Fixed: nothing is ever interpolated into it. */
export const INIT_PROGRAM = [
  '$| = 1;',
  '$SIG{CHLD} = sub { 1 while waitpid(-1, 1) > 0; };',
  'print "ready\\n";',
  'for (;;) { my $n = sysread(STDIN, my $buf, 4096); last if defined $n && $n == 0; next if !defined $n && $! + 0 == 4; last if !defined $n; }',
  'close STDIN; close STDOUT; close STDERR;',
  'for (;;) { next if waitpid(-1, 0) > 0; next if $! + 0 == 4; exit($! + 0 == 10 ? 0 : 1); }',
].join('\n');
