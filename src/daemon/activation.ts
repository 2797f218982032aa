// systemd socket activation (sd_listen_fds(3)): the listening socket arrives as fd 3 when
// LISTEN_FDS is set and LISTEN_PID names this very process. A LISTEN_PID that is missing or names
// another process means the variables were inherited from an ancestor, not meant for us: they are
// ignored, exactly as sd_listen_fds does. The variables are removed from our environment either way
// so that CRIU and other children do not see them.

const SD_LISTEN_FDS_START = 3;

export interface ActivationEnv {
  LISTEN_FDS?: string;
  LISTEN_PID?: string;
  LISTEN_FDNAMES?: string;
}

/** The inherited listening fd, or undefined for a plain start. Throws when more than one is passed. */
export function inheritedListenFd(env: ActivationEnv, pid: number = process.pid): number | undefined {
  const fds = env.LISTEN_FDS;
  const forPid = env.LISTEN_PID;
  delete env.LISTEN_FDS;
  delete env.LISTEN_PID;
  delete env.LISTEN_FDNAMES;
  if (fds === undefined || forPid === undefined || Number(forPid) !== pid) return undefined;
  const count = Number(fds);
  if (!Number.isInteger(count) || count < 0) throw new Error(`LISTEN_FDS="${fds}" is not a number of fds`);
  if (count === 0) return undefined;
  if (count > 1) throw new Error(`LISTEN_FDS=${count}: agentd listens on exactly one socket (agentd.socket has one ListenStream)`);
  return SD_LISTEN_FDS_START;
}
