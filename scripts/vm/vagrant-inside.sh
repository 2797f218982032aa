#!/usr/bin/env bash
# vagrant-inside.sh MACHINE...: the part of a future `npm run test:vagrant` that runs inside its network
# namespace (scripts/vm/vagrant.sh starts it with `ip netns exec`, which also gives it a mount
# namespace of its own: nothing mounted here is seen outside, and it all goes when this exits).
# Expects AGENTD_VAGRANT_WORK (a scratch directory), AGENTD_VAGRANT_IMAGE (the test:vm image
# directory: vmlinuz, initrd.img) and AGENTD_VAGRANT_BOX (the box's name in VAGRANT_HOME).
# STATUS: a first version, NOT YET RUN END TO END; no npm script runs it (docs/vm.md).
set -euo pipefail
cd "$(dirname "$0")/../.."
# shellcheck source=scripts/vm/results.sh
source scripts/vm/results.sh
WORK=${AGENTD_VAGRANT_WORK:?}
IMAGE=${AGENTD_VAGRANT_IMAGE:?}

say() { echo "test:vagrant: $*"; }
die() {
  echo "test:vagrant: FAILED: $*" >&2
  exit 1
}

# Only loopback, and the bridge libvirt makes: nothing reaches any other network.
ip link set lo up

# `ip netns exec` mounted a fresh /sys for the namespace, without the cgroup file systems under it:
# mount the host's again (libvirt puts its qemu in cgroups), as PID 1's mount table lists them.
awk '{ for (i = 1; i <= NF; i++) if ($i == "-") break
       if ($5 ~ "^/sys/fs/cgroup" && ($(i + 1) == "tmpfs" || $(i + 1) ~ /^cgroup2?$/)) print $5, $(i + 1), $(i + 3) }' /proc/1/mountinfo |
  while read -r point fstype options; do
    mkdir -p "$point"
    options=${options#rw,}
    [ "$options" = rw ] && options=defaults
    mount -t "$fstype" -o "$options" "$fstype" "$point"
  done
[ -n "$(ls /sys/fs/cgroup)" ] || die "could not mount the cgroup file systems again inside the namespace"

# libvirt's configuration and state, private to this run.
mkdir -p "$WORK/libvirt/etc" "$WORK/libvirt/lib" "$WORK/libvirt/log" "$WORK/libvirt/cache"
cp -a /etc/libvirt/. "$WORK/libvirt/etc/"
cp -a /var/lib/libvirt/. "$WORK/libvirt/lib/" 2>/dev/null || true
mount --bind "$WORK/libvirt/etc" /etc/libvirt
mount --bind "$WORK/libvirt/lib" /var/lib/libvirt
mkdir -p /var/log/libvirt /var/cache/libvirt /run/libvirt
mount --bind "$WORK/libvirt/log" /var/log/libvirt
mount --bind "$WORK/libvirt/cache" /var/cache/libvirt
mount -t tmpfs -o mode=0755 tmpfs /run/libvirt
# qemu runs as root here, with no security driver: the box image, the kernel and the shared
# repository are all root's.
printf 'user = "root"\ngroup = "root"\nsecurity_driver = "none"\n' >>/etc/libvirt/qemu.conf
mkdir -p /var/lib/libvirt/images

virtlogd -d
libvirtd -d
for _ in $(seq 100); do [ -S /run/libvirt/libvirt-sock ] && break; sleep 0.2; done
[ -S /run/libvirt/libvirt-sock ] || die "libvirtd did not start (see $WORK/libvirt/log)"

export VAGRANT_DOTFILE_PATH=$WORK/dot-vagrant VAGRANT_CHECKPOINT_DISABLE=1 VAGRANT_BOX_UPDATE_CHECK_DISABLE=1
export AGENTD_VAGRANT_LIBVIRT_DRIVER=qemu AGENTD_VAGRANT_SYNC=9p AGENTD_OFFLINE=1
export AGENTD_VAGRANT_KERNEL=$IMAGE/vmlinuz AGENTD_VAGRANT_INITRD=$IMAGE/initrd.img

stop_all() {
  vagrant destroy -f >/dev/null 2>&1 || true
  for domain in $(virsh -q list --all --name 2>/dev/null); do
    virsh destroy "$domain" >/dev/null 2>&1 || true
    virsh undefine "$domain" --nvram >/dev/null 2>&1 || virsh undefine "$domain" >/dev/null 2>&1 || true
  done
  for pidfile in /run/libvirtd.pid /run/virtlogd.pid; do
    [ -f "$pidfile" ] && kill "$(cat "$pidfile")" 2>/dev/null || true
  done
  sleep 1
}
trap stop_all EXIT
trap 'exit 130' INT TERM

if ! virsh pool-info default >/dev/null 2>&1; then
  virsh pool-define-as default dir --target /var/lib/libvirt/images >/dev/null
  virsh pool-start default >/dev/null
fi

declare -A results times
for machine in "$@"; do
  t0=$SECONDS
  say "vagrant up $machine (libvirt, qemu driver)"
  vagrant up "$machine" --provider libvirt 2>&1 | tee "$WORK/$machine.log" || true
  times[$machine]=$((SECONDS - t0))
  results[$machine]=$(grep -oE '[0-9]+ passed, [0-9]+ failed' "$WORK/$machine.log" | tail -n 1 || true)
  [ -n "${results[$machine]}" ] || results[$machine]="no result (vagrant up failed)"
  vagrant destroy -f "$machine" >/dev/null 2>&1 || true
  say "$machine: ${results[$machine]} (${times[$machine]} s, vagrant up and tests)"
done

for machine in "$@"; do echo "$machine: ${results[$machine]}"; done | sum_results vagrant
