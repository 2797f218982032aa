// The terminals agentd holds for restored shell jobs (`agentctl restore <id> --attach`): one per
// cgroup, each the pty CRIU restored the job onto. agentd reads the pty all the time, so the job
// never blocks on a full terminal while nobody watches, and keeps the last SCROLLBACK_BYTES of its
// output for the next client that attaches. At most one client is attached at a time; a second
// one is refused (EBUSY naming the first) unless it asks to take over, and the first is then told
// why its session closed. When the job ends its terminal is freed and the end is remembered, so a
// late attach is told what happened rather than "no such terminal".

import { AgentError } from '../errors/index.js';
import { readProcStat } from '../proc/index.js';
import { eventFrame, frame, OUTPUT, type Size, type TerminalEvent } from './frames.js';

/** What a session needs of the pty a restore handed over (src/checkpoint's RestoredTerminal). */
export interface HeldTerminal {
  readonly pid: number;
  readonly write: (data: string) => void;
  readonly resize: (cols: number, rows: number) => void;
  readonly onData: (listener: (data: string) => void) => { dispose(): void };
  readonly exited: Promise<{ exitCode: number; signal?: number }>;
}

/** An attached client as a session sees it: somewhere to send frames, and a way to hang up. */
export interface TerminalClient {
  /** Who it is, for messages: "agentctl pid 812 (uid 0)". */
  readonly who: string;
  send(data: Buffer): void;
  /** Ends the connection once what was sent is flushed. */
  close(): void;
}

/** How a job on a held terminal ended. */
export interface TerminalEnd {
  readonly cgroup: string;
  readonly hierarchy: string;
  readonly pid: number;
  readonly endedAt: string;
  readonly message: string;
  readonly exitCode?: number;
  readonly signal?: number;
}

/** A held terminal as GET /v1/cgroups/terminal shows it. */
export interface TerminalStatus {
  readonly cgroup: string;
  readonly hierarchy: string;
  readonly pid: number;
  readonly since: string;
  readonly cols: number;
  readonly rows: number;
  /** The attached client, if any. */
  readonly attached?: string;
}

// Enough for a screenful or two of a full-screen program, and the last few hundred lines of a log.
const SCROLLBACK_BYTES = 64 * 1024;
// Ended jobs remembered for late attaches; the oldest is forgotten past this.
const ENDED_KEPT = 100;

const key = (hierarchy: string, cgroup: string): string => `${hierarchy}:${cgroup}`;

/**
 * The exit as agentd sees it. CRIU is the restored root's parent and reaps it, so what agentd gets
 * is CRIU's own exit: measured with CRIU 4.1.1, 0 whatever the job's status (docs/daemon-and-cli.md).
 */
function endMessage(name: string, pid: number, exit: { exitCode: number; signal?: number }): string {
  const how = exit.signal ? `CRIU, its parent, was killed by signal ${exit.signal}` : `CRIU, its parent, exited with ${exit.exitCode}`;
  return `the job on ${name} (pid ${pid}) ended and its terminal is closed (${how}; the job's own exit status is CRIU's to see, not agentd's)`;
}

export class TerminalSession {
  readonly since = new Date();
  private scrollback: string[] = [];
  private scrollbackBytes = 0;
  private client: TerminalClient | undefined;
  private size: Size;
  private registered: { cgroup: string; hierarchy: string } | undefined;
  private endedWith: TerminalEnd | undefined;
  private readonly subscription: { dispose(): void };
  private readonly onEnd: ((end: TerminalEnd) => void)[] = [];

  /** Starts reading the terminal at once: output before `register` is kept for the first attach. */
  constructor(
    private readonly terminal: HeldTerminal,
    size: Size,
  ) {
    this.size = size;
    this.subscription = terminal.onData((data) => this.output(data));
    void terminal.exited.then((exit) => this.ended(exit));
  }

  get pid(): number {
    return this.terminal.pid;
  }

  get name(): string {
    return this.registered ? key(this.registered.hierarchy, this.registered.cgroup) : `pid ${this.pid}`;
  }

  /** The end, once the job has ended. */
  get end(): TerminalEnd | undefined {
    return this.endedWith;
  }

  /** Names the session's cgroup (known once the restore has answered). */
  register(cgroup: string, hierarchy: string): void {
    this.registered = { cgroup, hierarchy };
  }

  whenEnded(listener: (end: TerminalEnd) => void): void {
    if (this.endedWith) listener(this.endedWith);
    else this.onEnd.push(listener);
  }

  status(): TerminalStatus {
    return {
      cgroup: this.registered?.cgroup ?? '',
      hierarchy: this.registered?.hierarchy ?? '',
      pid: this.pid,
      since: this.since.toISOString(),
      cols: this.size.cols,
      rows: this.size.rows,
      ...(this.client ? { attached: this.client.who } : {}),
    };
  }

  /**
   * Attaches `client`: it gets the `attached` event, then the scrollback, then live output. EBUSY
   * while another client is attached, unless `takeOver`: that one is then sent `closed` and let go.
   */
  attach(client: TerminalClient, options: { size?: Size; takeOver?: boolean } = {}): void {
    this.checkAttach(options.takeOver === true);
    if (this.client) {
      this.client.send(eventFrame({ type: 'closed', message: `${client.who} took over the terminal of ${this.name}; the job runs on` }));
      this.client.close();
    }
    this.client = client;
    const replay = this.scrollback.join('');
    const reg = this.registered ?? { cgroup: '', hierarchy: '' };
    const attached: TerminalEvent = {
      type: 'attached',
      cgroup: reg.cgroup,
      hierarchy: reg.hierarchy,
      pid: this.pid,
      replayedBytes: Buffer.byteLength(replay),
    };
    client.send(eventFrame(attached));
    if (replay) client.send(frame(OUTPUT, replay));
    if (options.size) this.resize(options.size);
  }

  /** What attach() would refuse, checked without attaching: ENOENT once the job ended, EBUSY while attached elsewhere. */
  checkAttach(takeOver: boolean): void {
    if (this.endedWith) throw new AgentError('ENOENT', this.endedWith.message);
    if (this.client && !takeOver) {
      throw new AgentError(
        'EBUSY',
        `the terminal of ${this.name} is attached to ${this.client.who}; detach there first (Ctrl-]), or take it over (agentctl attach --take-over)`,
      );
    }
  }

  /** Lets `client` go (it detached or hung up); the job runs on. */
  detach(client: TerminalClient): void {
    if (this.client === client) this.client = undefined;
  }

  isAttached(client: TerminalClient): boolean {
    return this.client === client;
  }

  input(client: TerminalClient, data: Buffer): void {
    if (this.client !== client || this.endedWith) return;
    this.terminal.write(data.toString('utf8'));
  }

  /**
   * Resizes the pty. The kernel sends SIGWINCH to the terminal's foreground process group, which is
   * CRIU's (it leads the pty's session; the restored job has a session of its own and no controlling
   * terminal, src/criu/terminal.ts), so the job's own process group is sent SIGWINCH here as well.
   */
  resize(size: Size): void {
    if (this.endedWith) return;
    const changed = size.cols !== this.size.cols || size.rows !== this.size.rows;
    this.size = size;
    try {
      this.terminal.resize(size.cols, size.rows);
    } catch {
      return; // the pty is closing: the job is ending
    }
    if (!changed) return;
    const pgrp = readProcStat(this.pid)?.pgrp;
    try {
      if (pgrp && pgrp > 1) process.kill(-pgrp, 'SIGWINCH');
    } catch {
      // the group is gone: the job is ending
    }
  }

  /** Tells the attached client, if any, that the session closes while the job runs on. */
  close(message: string): void {
    const client = this.client;
    this.client = undefined;
    if (!client) return;
    client.send(eventFrame({ type: 'closed', message }));
    client.close();
  }

  private output(data: string): void {
    this.scrollback.push(data);
    this.scrollbackBytes += Buffer.byteLength(data);
    while (this.scrollbackBytes > SCROLLBACK_BYTES && this.scrollback.length > 1) {
      this.scrollbackBytes -= Buffer.byteLength(this.scrollback.shift()!);
    }
    this.client?.send(frame(OUTPUT, data));
  }

  private ended(exit: { exitCode: number; signal?: number }): void {
    this.subscription.dispose();
    const reg = this.registered ?? { cgroup: '', hierarchy: '' };
    const end: TerminalEnd = {
      cgroup: reg.cgroup,
      hierarchy: reg.hierarchy,
      pid: this.pid,
      endedAt: new Date().toISOString(),
      message: endMessage(this.name, this.pid, exit),
      exitCode: exit.exitCode,
      ...(exit.signal ? { signal: exit.signal } : {}),
    };
    this.endedWith = end;
    const client = this.client;
    this.client = undefined;
    if (client) {
      client.send(
        eventFrame({ type: 'ended', message: end.message, exitCode: end.exitCode, ...(end.signal ? { signal: end.signal } : {}) }),
      );
      client.close();
    }
    for (const listener of this.onEnd.splice(0)) listener(end);
  }
}

/** Every terminal agentd holds, by cgroup, and how the recent ones ended. */
export class TerminalSessions {
  private readonly live = new Map<string, TerminalSession>();
  private readonly ended = new Map<string, TerminalEnd>();

  /** Holds `session` as the terminal of the cgroup; freed when its job ends. */
  hold(session: TerminalSession, cgroup: string, hierarchy: string): void {
    const k = key(hierarchy, cgroup);
    session.register(cgroup, hierarchy);
    this.ended.delete(k);
    this.live.set(k, session);
    session.whenEnded((end) => {
      if (this.live.get(k) === session) this.live.delete(k);
      this.ended.set(k, end);
      while (this.ended.size > ENDED_KEPT) this.ended.delete(this.ended.keys().next().value!);
    });
  }

  /** The live terminal of the cgroup; ENOENT saying how its job ended, or that there is none. */
  get(cgroup: string, hierarchy: string): TerminalSession {
    const k = key(hierarchy, cgroup);
    const session = this.live.get(k);
    if (session && !session.end) return session;
    const end = this.ended.get(k) ?? session?.end;
    if (end) throw new AgentError('ENOENT', `${end.message}, at ${end.endedAt}`, { details: { ...end } });
    throw new AgentError(
      'ENOENT',
      `agentd holds no terminal for ${k}: only a shell job restored with --attach has one (agentctl restore <id> --attach)`,
    );
  }

  list(): TerminalStatus[] {
    return [...this.live.values()].filter((s) => !s.end).map((s) => s.status());
  }

  /** Closes every attached client's session (agentd is stopping); the jobs lose their terminals when agentd exits. */
  closeAll(message: string): void {
    for (const session of this.live.values()) session.close(message);
  }
}
