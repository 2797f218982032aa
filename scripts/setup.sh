#!/usr/bin/env bash
# `npm run setup`: makes this machine run agentd from this checkout, on its defaults
# (/run/agentd/agentd.sock, /run/agentd, /var/lib/agentd/checkpoints). Run as root; safe to run again
# (a second run rebuilds and restarts the agent, and changes nothing else).
#
#  1. system packages agentd and its tests use (only when one is missing: no apt-get otherwise; where
#     apt cannot reach its archive, a missing package agentd itself needs is fatal, one only the test
#     suite uses is named and left out: those tests skip);
#  2. a CRIU that passes a functional self-test: a dump and restore of a small program holding
#     sockets, a pipe, epoll and memory (scripts/install-criu.sh, docs/criu-selection.md);
#  3. npm ci, unless node_modules already holds every package of package-lock.json at its version,
#     and npm run build, unless dist/ is newer than every source file (so a machine with no network,
#     like the test:vm guests, runs setup as it is when nothing is missing);
#  4. the group `agentd` (members may use the socket), and the install layout:
#     /usr/local/lib/agentd -> this checkout, /usr/local/sbin/agentd and /usr/local/bin/agentctl;
#  5. where systemd is PID 1: agentd.socket, agentd.service and the tmpfiles.d entry, enabled and
#     started; elsewhere: agentd in the background, pid in /run/agentd/agentd.pid, log in
#     /var/log/agentd.log, replacing an agentd an earlier run started;
#  6. waits until the agent answers GET /v1/health on its socket, and says how to use it.
# AGENTD_OFFLINE=1: nothing is fetched (test:vm's machines, an air-gapped host): no apt-get, and only
# the CRIUs already installed are tried; a missing package or CRIU agentd needs is then fatal.
set -euo pipefail
cd "$(dirname "$0")/.."
REPO=$(pwd -P)

SOCKET=/run/agentd/agentd.sock
RUN_DIR=/run/agentd
STATE_DIR=/var/lib/agentd
IMAGES_DIR=$STATE_DIR/checkpoints
PID_FILE=$RUN_DIR/agentd.pid
LOG_FILE=/var/log/agentd.log
LIB_LINK=/usr/local/lib/agentd
DAEMON_LAUNCHER=/usr/local/sbin/agentd
CLI_LAUNCHER=/usr/local/bin/agentctl
UNIT_DIR=/etc/systemd/system
TMPFILES_CONF=/etc/tmpfiles.d/agentd.conf
# util-linux: flock, setpriv, runuser (the lock's cooperating tools, the socket-permission tests);
# iproute2: CRIU restores network state with `ip`; ca-certificates: npm over https; procps: pgrep/ps;
# vagrant: the test suite runs `vagrant validate` on the Vagrantfile (no VM is started); fish, zsh:
# the tests drive agentctl's completion scripts in the shells they are for; strace: the fault tests
# park or kill CRIU at exact moments of a dump (docs/criu-faults.md), and test/fidelity shows a traced
# process refused; python3, wget, redis-server, nginx-light, xz-utils: the programs test/fidelity
# checkpoints and restores (each on a private config and a loopback port of its own); iptables: a CRIU
# built without nftables locks the TCP connections it dumps with iptables-restore (with
# --tcp-established, and also a connection a server has closed but still holds an fd of); without
# it such a dump fails with "Iptables configuration failed" (docs/criu.md).
PACKAGES=(util-linux iproute2 ca-certificates procps iptables vagrant fish zsh strace python3 wget redis-server nginx-light xz-utils)
# Of those, the ones agentd itself runs; the others only the test suite uses.
AGENT_PACKAGES=(util-linux iproute2 procps)
# Of those, the ones whose package starts a system-wide service on install (nginx on port 80, redis
# on 6379). The tests never use those instances: where this run installed one, it is stopped and
# disabled again, so setup leaves no new listener behind.
SERVICE_PACKAGES=(nginx-light:nginx redis-server:redis-server)

export DEBIAN_FRONTEND=noninteractive
export PATH="/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin${PATH:+:$PATH}"

say() { echo "setup: $*"; }
die() {
  echo "setup: FAILED: $*" >&2
  exit 1
}

[ "$(id -u)" = 0 ] || die "run as root (agentd freezes cgroups and runs CRIU): sudo npm run setup"

NODE=$(command -v node) || die "node is not on PATH: install Node.js 20 or newer"
NODE=$(readlink -f "$NODE")
node_major=$("$NODE" -p 'process.versions.node.split(".")[0]')
[ "$node_major" -ge 20 ] || die "Node.js $("$NODE" --version) is too old: agentd needs 20 or newer"

# --- 1. system packages -------------------------------------------------------------------------
# One dpkg-query for all of them: each run costs seconds on a slow (emulated) machine.
installed=" $( (dpkg-query -W -f='${Package}:${Status}\n' "${PACKAGES[@]}" 2>/dev/null || true) | sed -n 's/:install ok installed$//p' | tr '\n' ' ') "
missing=()
for pkg in "${PACKAGES[@]}"; do
  [[ "$installed" == *" $pkg "* ]] || missing+=("$pkg")
done
# A machine with no route but loopback cannot reach any archive: apt-get is not even tried.
has_route() {
  awk 'NR > 1 { found = 1 } END { exit !found }' /proc/net/route 2>/dev/null ||
    awk '$10 != "lo" { found = 1 } END { exit !found }' /proc/net/ipv6_route 2>/dev/null
}
if [ "${#missing[@]}" -gt 0 ]; then
  needed=()
  for pkg in "${missing[@]}"; do
    [[ " ${AGENT_PACKAGES[*]} " == *" $pkg "* ]] && needed+=("$pkg")
  done
  # apt-get update exits 0 even when it fetched nothing ("Temporary failure resolving"), so only
  # the install says whether the archive was reached.
  if [ "${AGENTD_OFFLINE:-0}" = 1 ]; then
    why="AGENTD_OFFLINE=1"
  elif ! has_route; then
    why="no network route but loopback"
  else
    say "installing ${missing[*]}"
    if ! apt-get update -qq 2>/dev/null; then
      why="apt-get update failed"
    elif ! apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null; then
      why="apt-get install ${missing[*]} failed"
    else
      why=
    fi
  fi
  if [ -n "$why" ]; then
    [ "${#needed[@]}" -eq 0 ] || die "$why, and agentd needs ${needed[*]}: check the network and /etc/apt/sources.list.d"
    say "$why: going on without ${missing[*]}, which agentd can run without (the tests that need them skip)"
    missing=()
  fi
  for entry in "${SERVICE_PACKAGES[@]}"; do
    pkg=${entry%%:*}
    unit=${entry#*:}
    [[ " ${missing[*]} " == *" $pkg "* ]] || continue
    if [ -d /run/systemd/system ]; then
      systemctl disable --now "$unit.service" >/dev/null 2>&1 || true
    else
      service "$unit" stop >/dev/null 2>&1 || true
    fi
  done
else
  say "system packages present: ${PACKAGES[*]}"
fi

# --- 2. CRIU ------------------------------------------------------------------------------------
criu_args=()
# No compiler (a minimal machine, the test:vm guests): the self-test program built elsewhere, when
# this tree has one (scripts/install-criu.sh --compile-selftest dist/criu-selftest).
if ! command -v cc >/dev/null && [ -x dist/criu-selftest ]; then
  criu_args+=(--selftest-program dist/criu-selftest)
fi
[ "${AGENTD_OFFLINE:-0}" = 1 ] && criu_args+=(--offline)
bash scripts/install-criu.sh "${criu_args[@]}"

# --- 3. build -----------------------------------------------------------------------------------
# Every package package-lock.json lists is in node_modules at the locked version (what npm ci would
# leave), read from each package's own package.json: nothing to fetch.
modules_complete() {
  "$NODE" -e '
    const { readFileSync } = require("node:fs");
    const lock = JSON.parse(readFileSync("package-lock.json", "utf8"));
    for (const [path, entry] of Object.entries(lock.packages ?? {})) {
      if (path === "" || entry.link) continue;
      let version;
      try { version = JSON.parse(readFileSync(path + "/package.json", "utf8")).version; } catch { version = undefined; }
      if (version !== entry.version && !entry.optional) { console.log(path); process.exit(1); }
    }' >/dev/null 2>&1
}
if modules_complete; then
  say "node_modules holds every package of package-lock.json: no npm ci"
else
  command -v npm >/dev/null || die "node_modules is incomplete and npm is not on PATH"
  say "npm ci"
  npm ci --no-audit --no-fund --loglevel=error
fi
# tsc rewrites every output, so one output of the last build stands for all of them.
BUILD_STAMP=dist/src/daemon/main.js
if [ -f "$BUILD_STAMP" ] && [ -z "$(find src test fixtures bench scripts/bundle-cli.mjs tsconfig.json package-lock.json -newer "$BUILD_STAMP" -print -quit)" ]; then
  say "dist/ is newer than every source file: no npm run build"
else
  if command -v npm >/dev/null; then
    say "npm run build"
    npm run --silent build
  else
    # No npm (the test:vm guests have node alone): the build script's own command, run by node.
    [ -f node_modules/typescript/bin/tsc ] || die "dist/ is missing or older than the sources, and there is neither npm nor node_modules/typescript"
    say "build: tsc -p tsconfig.json, then scripts/bundle-cli.mjs (no npm on PATH)"
    "$NODE" node_modules/typescript/bin/tsc -p tsconfig.json
    "$NODE" scripts/bundle-cli.mjs
  fi
fi

# --- 4. group and install layout ----------------------------------------------------------------
if getent group agentd >/dev/null; then
  say "group agentd exists"
else
  say "creating the system group agentd (its members may use $SOCKET)"
  groupadd --system agentd
fi

# A file written whole under a temporary name, then renamed: a second run never leaves half a file.
install_text() { # MODE DEST (content on stdin)
  local tmp
  tmp=$(mktemp "$2.XXXXXX")
  cat >"$tmp"
  chmod "$1" "$tmp"
  mv -f "$tmp" "$2"
}

mkdir -p "$(dirname "$LIB_LINK")" "$(dirname "$DAEMON_LAUNCHER")" "$(dirname "$CLI_LAUNCHER")"
ln -sfn "$REPO" "$LIB_LINK"
# Launchers with node's absolute path: a systemd service does not see the PATH of this shell.
install_text 0755 "$DAEMON_LAUNCHER" <<EOF
#!/bin/sh
# agentd, installed by $REPO/scripts/setup.sh; bin/agentd-run holds its node settings
exec env AGENTD_NODE=$NODE $LIB_LINK/bin/agentd-run "\$@"
EOF
install_text 0755 "$CLI_LAUNCHER" <<EOF
#!/bin/sh
# agentctl, installed by $REPO/scripts/setup.sh
exec $NODE $LIB_LINK/bin/agentctl "\$@"
EOF
say "installed $DAEMON_LAUNCHER and $CLI_LAUNCHER (running $LIB_LINK -> $REPO)"

# --- 5. start -----------------------------------------------------------------------------------
# The agentd a previous run of this script started in the background, if it is still that agentd.
background_pid() {
  local pid
  [ -f "$PID_FILE" ] || return 1
  pid=$(cat "$PID_FILE")
  [[ "$pid" =~ ^[0-9]+$ ]] || return 1
  tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -q "bin/agentd" || return 1
  echo "$pid"
}

stop_background_agent() {
  local pid
  pid=$(background_pid) || {
    rm -f "$PID_FILE"
    return 0
  }
  say "stopping the agentd an earlier setup started (pid $pid)"
  kill -TERM "$pid" 2>/dev/null || true
  # agentd aborts a running checkpoint (the cgroup goes back as it was) before it exits.
  for _ in $(seq 1 1300); do
    [ -d "/proc/$pid" ] || break
    sleep 0.1
  done
  [ ! -d "/proc/$pid" ] || die "agentd (pid $pid) did not stop within 130 s; see $LOG_FILE"
  rm -f "$PID_FILE"
}

# The agent's archive signing key (docs/archive.md): agentd makes it at first start too; made here
# so that `agentctl key` has something to show the other hosts right after setup. Never replaced.
SIGNING_KEY=$STATE_DIR/signing-key
if [ ! -e "$SIGNING_KEY" ]; then
  mkdir -p "$STATE_DIR" && chmod 0700 "$STATE_DIR"
  # node rather than openssl(1), which a minimal host may lack; the same PKCS#8 PEM either way.
  (umask 077 && "$NODE" -e '
    const { generateKeyPairSync } = require("node:crypto");
    const pem = generateKeyPairSync("ed25519").privateKey.export({ format: "pem", type: "pkcs8" });
    require("node:fs").writeFileSync(process.argv[1], pem, { mode: 0o600, flag: "wx" });
  ' "$SIGNING_KEY.new" && mv -n "$SIGNING_KEY.new" "$SIGNING_KEY")
  rm -f "$SIGNING_KEY.new"
  say "made the archive signing key $SIGNING_KEY"
fi
mkdir -p /etc/agentd/trusted-keys && chmod 0755 /etc/agentd /etc/agentd/trusted-keys

if [ -d /run/systemd/system ]; then
  mode=systemd
  stop_background_agent
  say "installing systemd units into $UNIT_DIR"
  install_text 0644 "$UNIT_DIR/agentd.socket" <systemd/agentd.socket
  install_text 0644 "$UNIT_DIR/agentd.service" <systemd/agentd.service
  mkdir -p "$(dirname "$TMPFILES_CONF")"
  install_text 0644 "$TMPFILES_CONF" <systemd/agentd.tmpfiles.conf
  systemd-tmpfiles --create "$TMPFILES_CONF"
  systemctl daemon-reload
  systemctl enable agentd.socket agentd.service
  systemctl start agentd.socket
  # restart, not start: a second run must put the freshly built code in service.
  systemctl restart agentd.service
else
  mode=background
  say "systemd is not PID 1 here: starting agentd in the background"
  stop_background_agent
  mkdir -p "$RUN_DIR" && chmod 0755 "$RUN_DIR"
  mkdir -p "$STATE_DIR" && chmod 0700 "$STATE_DIR"
  # setsid: the agent outlives this script's session and terminal; it execs, so $! is agentd itself.
  # env -i: nothing of this shell's environment (npm's variables, or a NOTIFY_SOCKET or LISTEN_FDS
  # meant for whatever runs this script) reaches the agent.
  env -i PATH="/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin" HOME=/root LANG=C.UTF-8 \
    setsid "$DAEMON_LAUNCHER" --socket "$SOCKET" --run-dir "$RUN_DIR" --images-dir "$IMAGES_DIR" \
    </dev/null >>"$LOG_FILE" 2>&1 &
  echo $! >"$PID_FILE"
  say "agentd started, pid $(cat "$PID_FILE"), logging to $LOG_FILE"
fi

# --- 6. wait for it ----------------------------------------------------------------------------
health() {
  "$NODE" -e '
    const req = require("node:http").get({ socketPath: process.argv[1], path: "/v1/health", timeout: 2000 }, (res) => {
      res.resume();
      process.exit(res.statusCode === 200 ? 0 : 1);
    });
    req.on("error", () => process.exit(1));
    req.on("timeout", () => process.exit(1));' "$SOCKET"
}
for i in $(seq 1 600); do
  health && break
  if [ "$mode" = background ] && ! background_pid >/dev/null; then
    tail -n 20 "$LOG_FILE" >&2 || true
    die "agentd exited during start; its log is above ($LOG_FILE)"
  fi
  [ "$i" -lt 600 ] || die "agentd did not answer on $SOCKET within 60 s (see $([ "$mode" = systemd ] && echo 'journalctl -u agentd' || echo "$LOG_FILE"))"
  sleep 0.1
done

say "agentd is answering on $SOCKET ($mode mode)"
cat <<EOF

agentd is running. Try:
  agentctl host                               what the agent sees: kernel, cgroups, CRIU
  agentctl state <cgroup>                     THAWED, FREEZING, FROZEN or CHECKPOINTING
  agentctl freeze <cgroup> / thaw <cgroup>
  agentctl checkpoint <cgroup> [--after prior|thawed|frozen|killed]
  agentctl checkpoints / show <id> / restore <id> / delete <id>
  agentctl --help                             every command, with examples
Members of the group agentd may use the socket too: usermod -aG agentd <user>
EOF
if [ "$mode" = systemd ]; then
  echo "Service: systemctl status agentd; logs: journalctl -u agentd"
else
  echo "Background agent: pid file $PID_FILE, log $LOG_FILE; stop it with: kill \$(cat $PID_FILE)"
fi
