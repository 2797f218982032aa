#!/usr/bin/env bash
# vagrant.sh [--only v2|v1|v2b]... [TEST_PATH...]: `npm run test:vm`.
# vagrant.sh --tools: step 1 below, nothing else. vagrant.sh --prepare: steps 1 and 2 (the image and
# the box, cached), no build and no boot; .ci/run does this while the host suite runs.
#
# Proves agentd on the two cgroup layouts this host does not have, each on a real separate kernel
# (Debian 12's 6.1) under systemd as PID 1: a pure cgroup v2 machine (v2) and a legacy v1 one (v1),
# then the move: v2b, a second pure-v2 machine made afresh from the same box, imports and restores
# what v2 and v1 exported (docs/fleet.md; v2 to v2b must pass, v1 to v2b is refused). The machines
# are the Vagrantfile's, brought up as a user would (`vagrant up`, its two provisioners, `vagrant
# destroy`), on a machine with no box to download and no network, like CI's:
#
#   1. Installs Debian's vagrant, vagrant-libvirt, libvirt's daemon, qemu and debootstrap when
#      missing, with every service start refused for the length of the install (a policy-rc.d).
#   2. Builds the guest image (scripts/vm/build-image.sh) and the libvirt box made from it
#      (scripts/vm/build-box.sh), both cached by recipe hash, and adds the box to a private
#      VAGRANT_HOME ($AGENTD_VM_CACHE/vagrant-home) when it changed.
#   3. Chooses the libvirt driver by trying KVM (scripts/vm/accel.sh): kvm if the guest kernel
#      boots under it, else qemu (software emulation).
#   4. Creates a network namespace and runs scripts/vm/vagrant-inside.sh in it: libvirtd with a
#      private configuration and state, `vagrant up` and `vagrant destroy` of each machine in turn,
#      each within AGENTD_VM_TIMEOUT seconds (default 2100). The setup provisioner runs the README's
#      `npm run setup` in the guest, the test provisioner the in-VM entry point
#      (scripts/vm/in-vm-test.sh: its subset, or the TEST_PATHs). The move's files go through each
#      machine's read-write share ($AGENTD_VM_CACHE/last-vagrant/<machine>/).
#   5. On any exit (also SIGTERM or SIGINT) every process left in the namespace (vagrant, libvirtd,
#      qemu, dnsmasq) is killed, the namespace deleted, and the run's directory with libvirt's
#      state removed.
# Prints each machine's `N passed, N failed`, the move's verdict and a total, and fails if a machine
# failed, gave no result or outlived its time limit. --only may be given more than once: `--only v2
# --only v2b` is the move without v1; v2b needs v2.
#
# Environment: AGENTD_VM_TIMEOUT (seconds per machine, from `vagrant up` to the end of its
# provisioners, default 2100), AGENTD_VM_MEMORY (MiB, default 4096) and AGENTD_VM_CPUS (default 2)
# for the Vagrantfile's AGENTD_VAGRANT_MEMORY and AGENTD_VAGRANT_CPUS, AGENTD_VM_ACCEL (kvm or tcg,
# default: tried), AGENTD_VM_CACHE (default /var/tmp/agentd-vm). Logs of the last run:
# $AGENTD_VM_CACHE/last-vagrant/ (one log per machine, its serial console, its share with suite.log
# and result, libvirtd's log, timings).
set -euo pipefail
cd "$(dirname "$0")/../.."
CACHE=${AGENTD_VM_CACHE:-/var/tmp/agentd-vm}
export AGENTD_VM_CACHE=$CACHE
export AGENTD_VAGRANT_MEMORY=${AGENTD_VAGRANT_MEMORY:-${AGENTD_VM_MEMORY:-4096}}
export AGENTD_VAGRANT_CPUS=${AGENTD_VAGRANT_CPUS:-${AGENTD_VM_CPUS:-2}}
BOX_NAME=agentd-test/bookworm

say() { echo "test:vm: $*"; }
die() {
  echo "test:vm: FAILED: $*" >&2
  exit 1
}

only=()
targets=()
phase=run
while [ "$#" -gt 0 ]; do
  case $1 in
    --only) only+=("${2:?--only needs v2, v1 or v2b}"); shift ;;
    --tools) phase=tools ;;
    --prepare) phase=prepare ;;
    -h | --help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    -*) die "unknown option $1 (--only, --tools, --prepare, --help)" ;;
    *) targets+=("$1") ;;
  esac
  shift
done
for m in "${only[@]}"; do [[ " v2 v1 v2b " == *" $m "* ]] || die "unknown machine $m (v2, v1 or v2b)"; done
[ "${#only[@]}" -gt 0 ] || only=(v2 v1 v2b)
# In boot order, whatever the order given: v2b restores what v2 and v1 exported.
machines=()
for m in v2 v1 v2b; do [[ " ${only[*]} " == *" $m "* ]] && machines+=("$m"); done
[[ " ${machines[*]} " != *" v2b "* || " ${machines[*]} " == *" v2 "* ]] || die "v2b restores what v2 exports: add --only v2"

[ "$(id -u)" = 0 ] || die "must run as root (network namespace, libvirt, debootstrap, loop mount)"

LOGS=$CACHE/last-vagrant
TIMINGS=$LOGS/timings
if [ "$phase" = run ]; then
  rm -rf "$LOGS"
  mkdir -p "$LOGS"
fi
# step NAME SECONDS: one line of the run's timings, also printed.
step() {
  [ "$phase" != run ] || echo "$1 $2" >>"$TIMINGS"
  say "$1: $2 s"
}

install_tools() {
  local need=() made_policy=no
  command -v vagrant >/dev/null || need+=(vagrant)
  ls /usr/share/rubygems-integration/all/gems 2>/dev/null | grep -q '^vagrant-libvirt-' || need+=(vagrant-libvirt)
  command -v libvirtd >/dev/null || need+=(libvirt-daemon-system libvirt-daemon-driver-qemu)
  command -v virsh >/dev/null || need+=(libvirt-clients)
  command -v dnsmasq >/dev/null || need+=(dnsmasq-base)
  command -v qemu-system-x86_64 >/dev/null || need+=(qemu-system-x86)
  command -v qemu-img >/dev/null || need+=(qemu-utils)
  command -v iptables >/dev/null || need+=(iptables)
  # The box is made from test:vm's image, which debootstrap builds into an ext4 file.
  command -v debootstrap >/dev/null || need+=(debootstrap)
  command -v mkfs.ext4 >/dev/null || need+=(e2fsprogs)
  [ "${#need[@]}" -gt 0 ] || return 0
  say "installing ${need[*]} (no service is started)"
  if [ ! -e /usr/sbin/policy-rc.d ]; then
    printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d
    chmod +x /usr/sbin/policy-rc.d
    made_policy=yes
  fi
  local ok=yes
  apt-get update -qq || ok=no
  [ "$ok" = yes ] && { DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null || ok=no; }
  [ "$made_policy" = yes ] && rm -f /usr/sbin/policy-rc.d
  [ "$ok" = yes ] || die "apt-get install ${need[*]} failed"
}

NS=
WORK=
INSIDE_PID=
cleanup() {
  local round pids
  trap - INT TERM
  if [ -n "$INSIDE_PID" ] && kill -0 "$INSIDE_PID" 2>/dev/null; then kill -TERM "$INSIDE_PID" 2>/dev/null || true; fi
  if [ -n "$NS" ] && [ -e "/run/netns/$NS" ]; then
    # Whatever is still in the namespace was started by this run: vagrant, libvirtd, its qemu and
    # dnsmasq. Several rounds, since a dying parent may still fork.
    for round in 1 2 3 4 5 6 7 8 9 10; do
      pids=$(ip netns pids "$NS" 2>/dev/null || true)
      [ -n "$pids" ] || break
      # shellcheck disable=SC2086
      kill -KILL $pids 2>/dev/null || true
      sleep 0.5
    done
    ip netns del "$NS" 2>/dev/null || true
  fi
  if [ -n "$INSIDE_PID" ]; then wait "$INSIDE_PID" 2>/dev/null || true; fi
  # The move's archives are the only large files a run leaves in its logs; the records beside them stay.
  rm -f "$LOGS"/{v2,v1}/move/*.agentd-archive "$LOGS"/v2b/move-in/*.agentd-archive
  if [ -n "$WORK" ]; then
    # libvirtd's own log is worth keeping; its state (the run's disks, domains, networks) is not.
    cp "$WORK/libvirt/log/libvirtd.log" "$LOGS/" 2>/dev/null || true
    rm -rf "$WORK"
  fi
}
trap cleanup EXIT
trap 'exit 143' TERM
trap 'exit 130' INT

started=$SECONDS
t=$SECONDS
install_tools
step tools $((SECONDS - t))
[ "$phase" != tools ] || exit 0

if [ "$phase" = run ]; then
  [ -d node_modules ] || die "no node_modules in $(pwd): run npm ci (or npm run setup) first"
  t=$SECONDS
  npm run --silent build
  # The box has no compiler: its CRIU self-test (scripts/vm/in-vm-test.sh) runs this build of it.
  bash scripts/install-criu.sh --compile-selftest dist/criu-selftest
  step build $((SECONDS - t))
fi

t=$SECONDS
IMAGE=$(bash scripts/vm/build-image.sh)
step image $((SECONDS - t))

t=$SECONDS
BOX=$(bash scripts/vm/build-box.sh "$IMAGE")
export VAGRANT_HOME=$CACHE/vagrant-home VAGRANT_CHECKPOINT_DISABLE=1 VAGRANT_BOX_UPDATE_CHECK_DISABLE=1
mkdir -p "$VAGRANT_HOME"
if [ "$(cat "$VAGRANT_HOME/agentd-box" 2>/dev/null)" != "$BOX" ]; then
  say "adding $BOX to $VAGRANT_HOME as $BOX_NAME"
  vagrant box add --force --name "$BOX_NAME" --provider libvirt "$BOX" >/dev/null
  echo "$BOX" >"$VAGRANT_HOME/agentd-box"
fi
step box $((SECONDS - t))
if [ "$phase" = prepare ]; then
  say "image $IMAGE and box $BOX ready"
  exit 0
fi

t=$SECONDS
accel=${AGENTD_VM_ACCEL:-$(bash scripts/vm/accel.sh "$IMAGE/vmlinuz")}
driver=$([ "$accel" = kvm ] && echo kvm || echo qemu)
step "kvm-probe($accel)" $((SECONDS - t))

WORK=$(mktemp -d "$CACHE/vagrant-run.XXXXXX")
NS=agentd-vagrant-$$
ip netns add "$NS"
status=0
AGENTD_VAGRANT_WORK=$WORK AGENTD_VAGRANT_LOGS=$LOGS AGENTD_VAGRANT_IMAGE=$IMAGE AGENTD_VAGRANT_BOX=$BOX_NAME \
  AGENTD_VAGRANT_LIBVIRT_DRIVER=$driver \
  ip netns exec "$NS" bash scripts/vm/vagrant-inside.sh "${machines[@]}" -- "${targets[@]}" &
INSIDE_PID=$!
# wait, not a foreground command: a TERM or INT is acted on at once, not when the run ends.
wait "$INSIDE_PID" || status=$?
INSIDE_PID=
say "total $((SECONDS - started)) s, $accel (timings in $TIMINGS)"
exit "$status"
