#!/usr/bin/env bash
# vagrant.sh [MACHINE...] [-- TEST_PATH...]: `npm run test:vagrant`, also `npm run test:vm` with AGENTD_VM_PATH=vagrant
# (scripts/vm/run.sh). The Vagrantfile as a user would use it, `vagrant up` and `vagrant destroy`, on
# a machine with no box to download and no network, like CI's. MACHINE: v2, v1 (default: both), v2b.
#
#   1. Installs Debian's vagrant, vagrant-libvirt, libvirt's daemon, qemu and debootstrap when missing, with
#      every service start refused for the length of the install (a policy-rc.d).
#   2. Builds test:vm's guest image (scripts/vm/build-image.sh) and the libvirt box made from it
#      (scripts/vm/build-box.sh), both cached by recipe hash, and adds the box to a private
#      VAGRANT_HOME ($AGENTD_VM_CACHE/vagrant-home) when it changed.
#   3. Chooses the libvirt driver by trying KVM (scripts/vm/accel.sh): kvm if the guest kernel
#      boots under it, else qemu (software emulation).
#   4. Creates a network namespace and runs scripts/vm/vagrant-inside.sh in it: libvirtd with a
#      private configuration and state, `vagrant up` and `vagrant destroy` of each machine, each
#      within AGENTD_VM_TIMEOUT seconds (default 2100). With v2b among the machines, the move
#      (docs/vm.md): v2 and v1 export a job after their suite, v2b imports and restores it, carried
#      through each machine's read-write share ($AGENTD_VM_CACHE/last-vagrant/<machine>/).
#   5. On any exit (also SIGTERM or SIGINT) every process left in the namespace (vagrant, libvirtd,
#      qemu, dnsmasq) is killed, the namespace deleted, and the run's directory with libvirt's
#      state removed.
# Logs of the last run: $AGENTD_VM_CACHE/last-vagrant/ (one log per machine, its serial console,
# its share with suite.log and result, libvirtd's log, timings).
set -euo pipefail
cd "$(dirname "$0")/../.."
CACHE=${AGENTD_VM_CACHE:-/var/tmp/agentd-vm}
export AGENTD_VM_CACHE=$CACHE
BOX_NAME=agentd-test/bookworm

say() { echo "test:vagrant: $*"; }
die() {
  echo "test:vagrant: FAILED: $*" >&2
  exit 1
}

[ "$(id -u)" = 0 ] || die "must run as root (network namespace, libvirt, loop mount)"

machines=()
targets=()
while [ "$#" -gt 0 ]; do
  case $1 in
    v2 | v1 | v2b) machines+=("$1") ;;
    --) shift; targets=("$@"); break ;;
    -h | --help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) die "unknown machine $1 (v2, v1 or v2b)" ;;
  esac
  shift
done
[ "${#machines[@]}" -gt 0 ] || machines=(v2 v1)
# In boot order, whatever the order given: v2b restores what v2 and v1 exported (the move).
given=" ${machines[*]} "
machines=()
for m in v2 v1 v2b; do [[ "$given" == *" $m "* ]] && machines+=("$m"); done
[[ "$given" != *" v2b "* || "$given" == *" v2 "* ]] || die "v2b restores what v2 exports: add v2"

LOGS=$CACHE/last-vagrant
rm -rf "$LOGS"
mkdir -p "$LOGS"
TIMINGS=$LOGS/timings
# step NAME SECONDS: one line of the run's timings, also printed.
step() {
  echo "$1 $2" >>"$TIMINGS"
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
[ -d node_modules ] || die "no node_modules in $(pwd): run npm ci (or npm run setup) first"

t=$SECONDS
npm run --silent build
# The box has no compiler: its CRIU self-test (scripts/vm/in-vm-test.sh) runs this build of it.
bash scripts/install-criu.sh --compile-selftest dist/criu-selftest
step build $((SECONDS - t))

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
say "total $((SECONDS - started)) s (timings in $TIMINGS)"
exit "$status"
