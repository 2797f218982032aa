// systemd's readiness protocol (sd_notify(3)) without libsystemd: one datagram per message to the
// AF_UNIX socket named by NOTIFY_SOCKET. Node's dgram module has no AF_UNIX, hence libc via koffi.
// Without NOTIFY_SOCKET (a plain start) every call is a no-op.

import { AF_UNIX, SOCK_CLOEXEC, SOCK_DGRAM, libc, unixAddress } from './libc.js';

export interface Notifier {
  /** Sends `READY=1`, `STOPPING=1`, `WATCHDOG=1`, `STATUS=...` (newline-separated assignments). */
  send(message: string): void;
  /** Starts WATCHDOG=1 pings at half of WATCHDOG_USEC, when systemd asked for them. */
  startWatchdog(): void;
  stop(): void;
  readonly socketPath?: string;
}

export interface NotifyEnv {
  NOTIFY_SOCKET?: string;
  WATCHDOG_USEC?: string;
  WATCHDOG_PID?: string;
}

/** The watchdog interval systemd asked this process for, in ms, or undefined. */
function watchdogIntervalMs(env: NotifyEnv, pid: number = process.pid): number | undefined {
  const usec = Number(env.WATCHDOG_USEC);
  if (!Number.isInteger(usec) || usec <= 0) return undefined;
  // WATCHDOG_PID, when set, names the process the watchdog is meant for (as sd_watchdog_enabled).
  if (env.WATCHDOG_PID !== undefined && Number(env.WATCHDOG_PID) !== pid) return undefined;
  // sd_watchdog_enabled(3) recommends pinging at half the timeout.
  return Math.max(1, Math.floor(usec / 2000));
}

export function createNotifier(env: NotifyEnv, onError: (message: string) => void): Notifier {
  const socketPath = env.NOTIFY_SOCKET;
  const interval = watchdogIntervalMs(env);
  let timer: NodeJS.Timeout | undefined;

  const send = (message: string): void => {
    if (!socketPath) return;
    try {
      sendDatagram(socketPath, message);
    } catch (err) {
      onError(`sd_notify "${message.replace(/\n/g, ' ')}" to ${socketPath} failed: ${(err as Error).message}`);
    }
  };

  return {
    socketPath,
    send,
    startWatchdog() {
      if (!socketPath || interval === undefined || timer) return;
      timer = setInterval(() => send('WATCHDOG=1'), interval);
      timer.unref();
    },
    stop() {
      if (timer) clearInterval(timer);
      timer = undefined;
    },
  };
}

function sendDatagram(path: string, message: string): void {
  const c = libc();
  const { addr, len } = unixAddress(path);
  const fd = c.socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  if (fd < 0) throw new Error(`socket(AF_UNIX, SOCK_DGRAM): errno ${c.errno()}`);
  try {
    const data = Buffer.from(message);
    const sent = c.sendto(fd, data, data.length, 0, addr, len);
    if (sent < 0) throw new Error(`sendto: errno ${c.errno()}`);
  } finally {
    c.close(fd);
  }
}
