#!/usr/bin/env bash
# vagrant-inside.sh MACHINE... -- [TEST_PATH...]: the part of `npm run test:vagrant` that runs inside
# its network namespace. scripts/vm/vagrant.sh starts it with `ip netns exec`, which also gives it a
# mount namespace of its own: what is mounted here is seen nowhere else and goes when its last
# process ends, and vagrant.sh kills every process of the namespace when it exits.
# Expects AGENTD_VAGRANT_WORK (the run's scratch directory, removed afterwards), AGENTD_VAGRANT_LOGS
# (kept), AGENTD_VAGRANT_IMAGE (the image directory: vmlinuz, initrd.img), AGENTD_VAGRANT_BOX (the
# box's name in VAGRANT_HOME) and AGENTD_VAGRANT_LIBVIRT_DRIVER (kvm or qemu).
set -euo pipefail
cd "$(dirname "$0")/../.."
# shellcheck source=scripts/vm/results.sh
source scripts/vm/results.sh
WORK=${AGENTD_VAGRANT_WORK:?}
LOGS=${AGENTD_VAGRANT_LOGS:?}
IMAGE=${AGENTD_VAGRANT_IMAGE:?}
: "${AGENTD_VAGRANT_BOX:?}" "${AGENTD_VAGRANT_LIBVIRT_DRIVER:?}"

say() { echo "test:vagrant: $*"; }
die() {
  echo "test:vagrant: FAILED: $*" >&2
  exit 1
}
step() {
  echo "$1 $2" >>"$LOGS/timings"
  say "$1: $2 s"
}

machines=()
while [ "$#" -gt 0 ] && [ "$1" != -- ]; do
  machines+=("$1")
  shift
done
[ "${1:-}" = -- ] && shift
targets=("$@")

# Only loopback, and the bridge libvirt makes for its management network: no route leads anywhere
# else.
ip link set lo up

# libvirt's configuration and state, private to this run: the host's own (if any) is never read or
# changed, and the run's domains, networks, volumes and logs vanish with $WORK.
for d in etc lib log cache run; do mkdir -p "$WORK/libvirt/$d"; done
cp -a /etc/libvirt/. "$WORK/libvirt/etc/"
mkdir -p /etc/libvirt /var/lib/libvirt /var/log/libvirt /var/cache/libvirt /run/libvirt
mount --bind "$WORK/libvirt/etc" /etc/libvirt
mount --bind "$WORK/libvirt/lib" /var/lib/libvirt
mount --bind "$WORK/libvirt/log" /var/log/libvirt
mount --bind "$WORK/libvirt/cache" /var/cache/libvirt
mount --bind "$WORK/libvirt/run" /run/libvirt
mkdir -p /var/lib/libvirt/images /var/lib/libvirt/qemu /var/lib/libvirt/dnsmasq
# The qemu it starts runs as root with no security driver (the box's disk, the kernel and the
# shared repository are root's), outside any cgroup of libvirt's (cgroups are this project's subject:
# libvirt must not make or move any), and writes its own log files (no virtlogd to start).
cat >>/etc/libvirt/qemu.conf <<'EOF'
user = "root"
group = "root"
dynamic_ownership = 0
security_driver = "none"
cgroup_controllers = [ ]
stdio_handler = "file"
EOF
printf 'log_outputs = "2:file:/var/log/libvirt/libvirtd.log"\n' >>/etc/libvirt/libvirtd.conf

t=$SECONDS
libvirtd -d -p /run/libvirt/libvirtd.pid
for _ in $(seq 150); do virsh -q version >/dev/null 2>&1 && break; sleep 0.2; done
virsh -q version >/dev/null 2>&1 || die "libvirtd did not answer within 30 s (log: $WORK/libvirt/log/libvirtd.log)"
virsh -q pool-define-as default dir --target /var/lib/libvirt/images >/dev/null
virsh -q pool-start default >/dev/null
step libvirtd $((SECONDS - t))

export VAGRANT_DOTFILE_PATH=$WORK/dot-vagrant VAGRANT_NO_COLOR=1 VAGRANT_DEFAULT_PROVIDER=libvirt
export AGENTD_VAGRANT_SYNC=9p AGENTD_OFFLINE=1 AGENTD_VAGRANT_CONSOLE_DIR=$LOGS
export AGENTD_VAGRANT_KERNEL=$IMAGE/vmlinuz AGENTD_VAGRANT_INITRD=$IMAGE/initrd.img
export AGENTD_TEST_TARGETS="${targets[*]}"
for machine in "${machines[@]}"; do [ "$machine" = v2b ] && export AGENTD_VAGRANT_V2B=1; done

stop_all() {
  vagrant destroy -f >/dev/null 2>&1 || true
  [ -f /run/libvirt/libvirtd.pid ] && kill "$(cat /run/libvirt/libvirtd.pid)" 2>/dev/null || true
}
trap stop_all EXIT
trap 'exit 143' TERM
trap 'exit 130' INT

declare -A results
for machine in "${machines[@]}"; do
  log=$LOGS/$machine.log
  t=$SECONDS
  say "vagrant up $machine (libvirt driver $AGENTD_VAGRANT_LIBVIRT_DRIVER; log $log)"
  # In the background and waited for: a TERM reaches this script at once, not after the run.
  vagrant up "$machine" >"$log" 2>&1 &
  up=$!
  # Vagrant draws the box upload's progress bar with carriage returns: one line per update is noise.
  tail -n +1 -f "$log" --pid "$up" | sed -u -e 's/\r/\n/g' -e 's/Progress: [0-9]*%//g' -e 's/\x1b\[K//g' |
    grep --line-buffered -v '^$' | sed -u "s/^/$machine| /" &
  tailer=$!
  up_status=0
  wait "$up" || up_status=$?
  wait "$tailer" 2>/dev/null || true
  step "$machine-up" $((SECONDS - t))
  # The provisioners print when each phase ended (provision.sh); the rest of up is boot and ssh.
  grep -oE 'provision: (setup|suite) took [0-9]+ s' "$log" | sed "s/^provision: /$machine-/; s/ took / /; s/ s$//" >>"$LOGS/timings" || true
  results[$machine]=$(grep -oE '[0-9]+ passed, [0-9]+ failed' "$log" | tail -n 1 || true)
  [ -n "${results[$machine]}" ] || results[$machine]="no result (vagrant up exited $up_status; see $log)"
  t=$SECONDS
  vagrant destroy -f "$machine" >>"$log" 2>&1 || say "vagrant destroy $machine failed (see $log)"
  step "$machine-destroy" $((SECONDS - t))
  say "$machine: ${results[$machine]}"
done

for machine in "${machines[@]}"; do echo "$machine: ${results[$machine]}"; done | sum_results vagrant
