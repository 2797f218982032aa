#!/usr/bin/env bash
# vagrant.sh [v2] [v1]: a future `npm run test:vagrant`, the full Vagrant path (Vagrantfile, provisioning,
# the in-VM entry point) on a machine with no box to download and no KVM, like this project's.
#
#   1. Installs Debian's vagrant, vagrant-libvirt and libvirt when missing, without starting any
#      service (a policy-rc.d refuses it for the length of the install).
#   2. Makes a libvirt box from the test:vm image (scripts/vm/build-image.sh) and adds it to a
#      private VAGRANT_HOME under /var/tmp/agentd-vm: a copy of the image with a `vagrant` user
#      (Vagrant's well-known insecure key), passwordless sudo, sshd and DHCP on the first NIC. The
#      image has no boot loader, so the Vagrantfile boots its kernel and initrd directly
#      (AGENTD_VAGRANT_KERNEL/INITRD), with each machine's cgroup options on the command line.
#   3. Creates a network namespace and runs everything else inside it: libvirt's management network
#      (192.168.121.0/24) then exists only there, with no route out. `ip netns exec` remounts /sys,
#      hiding the cgroup mounts, so they are mounted again inside. libvirt's configuration and state
#      (/etc/libvirt, /var/lib/libvirt, /run/libvirt) are private copies for the run, so nothing it
#      defines outlives it.
#   4. `vagrant up <machine>` with the libvirt driver qemu (software emulation), the repository
#      shared over 9p (its node_modules and dist/ included: the guest has no network) and
#      AGENTD_OFFLINE=1; the test provisioner runs the in-VM entry point. Then `vagrant destroy`.
#   5. Prints each machine's `N passed, N failed` and a total; fails if either fails.
# The namespace, libvirt's daemons and every mount are removed on any exit.
# STATUS: a first version, NOT YET RUN END TO END; no npm script runs it (docs/vm.md).
set -euo pipefail
cd "$(dirname "$0")/../.."
REPO=$(pwd)
CACHE=${AGENTD_VM_CACHE:-/var/tmp/agentd-vm}
BOX_NAME=agentd-test/bookworm

say() { echo "test:vagrant: $*"; }
die() {
  echo "test:vagrant: FAILED: $*" >&2
  exit 1
}

[ "$(id -u)" = 0 ] || die "must run as root (network namespace, libvirt, loop mount)"

machines=("$@")
[ "${#machines[@]}" -gt 0 ] || machines=(v2 v1)

install_tools() {
  local need=() made_policy=no
  command -v vagrant >/dev/null || need+=(vagrant)
  [ -d /usr/share/rubygems-integration/all/gems ] && ls /usr/share/rubygems-integration/all/gems | grep -q '^vagrant-libvirt-' ||
    need+=(vagrant-libvirt)
  command -v libvirtd >/dev/null || need+=(libvirt-daemon-system)
  command -v dnsmasq >/dev/null || need+=(dnsmasq-base)
  command -v qemu-system-x86_64 >/dev/null || need+=(qemu-system-x86)
  command -v qemu-img >/dev/null || need+=(qemu-utils)
  [ "${#need[@]}" -gt 0 ] || return 0
  say "installing ${need[*]} (no service is started)"
  if [ ! -e /usr/sbin/policy-rc.d ]; then
    printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d
    chmod +x /usr/sbin/policy-rc.d
    made_policy=yes
  fi
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null || {
    [ "$made_policy" = yes ] && rm -f /usr/sbin/policy-rc.d
    die "apt-get install ${need[*]} failed"
  }
  [ "$made_policy" = yes ] && rm -f /usr/sbin/policy-rc.d
  return 0
}

NS=
MNT=
cleanup() {
  if [ -n "$MNT" ] && mountpoint -q "$MNT"; then umount "$MNT"; fi
  if [ -n "$NS" ]; then ip netns del "$NS" 2>/dev/null || true; fi
  rm -rf "${WORK:-}"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

install_tools
npm run --silent build
# The box has no compiler: its CRIU self-test (scripts/vm/in-vm-test.sh) runs this build of it.
bash scripts/install-criu.sh --compile-selftest dist/criu-selftest
IMAGE=$(bash scripts/vm/build-image.sh)
HASH=${IMAGE##*/image-}
export VAGRANT_HOME=$CACHE/vagrant-home
mkdir -p "$VAGRANT_HOME"
WORK=$(mktemp -d "$CACHE/vagrant-run.XXXXXX")

# The box: made once per image.
BOX=$CACHE/box-$HASH.box
if [ ! -f "$BOX" ]; then
  say "making the box from $IMAGE"
  cp --sparse=always "$IMAGE/root.img" "$WORK/root.img"
  MNT=$WORK/mnt
  mkdir -p "$MNT"
  mount -o loop "$WORK/root.img" "$MNT"
  PUB=$(ls /usr/share/rubygems-integration/all/gems/vagrant-*/keys/vagrant.pub 2>/dev/null | head -n 1)
  [ -n "$PUB" ] || die "Vagrant's insecure public key (keys/vagrant.pub) is not installed"
  chroot "$MNT" useradd -m -s /bin/bash vagrant
  install -d -m 0700 -o 1000 -g 1000 "$MNT/home/vagrant/.ssh"
  install -m 0600 -o 1000 -g 1000 "$PUB" "$MNT/home/vagrant/.ssh/authorized_keys"
  [ "$(chroot "$MNT" id -u vagrant)" = 1000 ] || die "the vagrant user is not uid 1000"
  echo 'vagrant ALL=(ALL) NOPASSWD: ALL' >"$MNT/etc/sudoers.d/vagrant"
  chmod 0440 "$MNT/etc/sudoers.d/vagrant"
  printf '[Match]\nName=en* eth*\n\n[Network]\nDHCP=ipv4\n' >"$MNT/etc/systemd/network/80-vagrant.network"
  chroot "$MNT" systemctl unmask ssh.service >/dev/null 2>&1
  chroot "$MNT" systemctl enable ssh.service systemd-networkd.service >/dev/null 2>&1
  umount "$MNT"
  MNT=
  qemu-img convert -O qcow2 "$WORK/root.img" "$WORK/box.img"
  rm -f "$WORK/root.img"
  echo '{"provider": "libvirt", "format": "qcow2", "virtual_size": 4}' >"$WORK/metadata.json"
  tar -C "$WORK" -czf "$BOX.tmp" metadata.json box.img
  mv "$BOX.tmp" "$BOX"
  rm -f "$WORK/box.img"
  for old in "$CACHE"/box-*.box; do [ "$old" = "$BOX" ] || rm -f "$old"; done
fi
VAGRANT_CHECKPOINT_DISABLE=1 vagrant box add --force --name "$BOX_NAME" "$BOX" >/dev/null

NS=agentd-vagrant-$$
ip netns add "$NS"
started=$SECONDS
status=0
AGENTD_VAGRANT_WORK=$WORK AGENTD_VAGRANT_IMAGE=$IMAGE AGENTD_VAGRANT_BOX=$BOX_NAME \
  ip netns exec "$NS" bash scripts/vm/vagrant-inside.sh "${machines[@]}" || status=$?
say "took $((SECONDS - started)) s in the namespace"
exit "$status"
