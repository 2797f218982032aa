#!/usr/bin/env bash
# build-box.sh IMAGE_DIR: makes (or finds in the cache) the libvirt Vagrant box of test:vm's guest
# image (scripts/vm/build-image.sh) and prints the path of the .box file.
#
# The box is a copy of the image with what `vagrant up` needs to reach it: a `vagrant` user (uid
# 1000) with Vagrant's well-known insecure public key (the one the installed Vagrant ships; Vagrant
# replaces it with a key of its own at the first `vagrant up`), passwordless sudo, sshd enabled
# (the image masks it) and systemd-networkd asking DHCP on the first NIC (libvirt's management
# network answers). Nothing is downloaded: everything comes from the image and the host's Vagrant.
# The image has no boot loader; the Vagrantfile boots its kernel and initrd directly
# (AGENTD_VAGRANT_KERNEL, AGENTD_VAGRANT_INITRD).
#
# Cache: $AGENTD_VM_CACHE/box-<hash>.box, where <hash> covers the image's recipe hash and this
# script. Older boxes are removed after a successful build.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
IMAGE=${1:?usage: build-box.sh IMAGE_DIR}
CACHE=${AGENTD_VM_CACHE:-/var/tmp/agentd-vm}

say() { echo "build-box: $*" >&2; }
die() {
  echo "build-box: FAILED: $*" >&2
  exit 1
}

[ "$(id -u)" = 0 ] || die "must run as root (loop mount, chroot)"
[ -f "$IMAGE/ready" ] || die "$IMAGE is not a finished image (no ready file)"
HASH=$({
  head -n 1 "$IMAGE/ready"
  sha256sum <"$HERE/build-box.sh"
} | sha256sum | cut -c1-16)
BOX=$CACHE/box-$HASH.box
if [ -f "$BOX" ]; then
  say "cached box $BOX"
  echo "$BOX"
  exit 0
fi

PUB=$(ls /usr/share/rubygems-integration/all/gems/vagrant-*/keys/vagrant.pub /usr/share/vagrant/keys/vagrant.pub 2>/dev/null | head -n 1 || true)
[ -n "$PUB" ] || die "Vagrant's insecure public key (keys/vagrant.pub) is not installed: apt-get install vagrant"

WORK=$(mktemp -d "$CACHE/box-build.XXXXXX")
MNT=
cleanup() {
  if [ -n "$MNT" ] && mountpoint -q "$MNT"; then umount "$MNT" || umount -l "$MNT"; fi
  rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

started=$SECONDS
# A copy: the image itself is shared with test:vm and other clones and is never changed.
cp --sparse=always "$IMAGE/root.img" "$WORK/root.img"
MNT=$WORK/mnt
mkdir -p "$MNT"
mount -o loop "$WORK/root.img" "$MNT"
chroot "$MNT" useradd -m -u 1000 -U -s /bin/bash vagrant
install -d -m 0700 -o 1000 -g 1000 "$MNT/home/vagrant/.ssh"
install -m 0600 -o 1000 -g 1000 "$PUB" "$MNT/home/vagrant/.ssh/authorized_keys"
echo 'vagrant ALL=(ALL) NOPASSWD: ALL' >"$MNT/etc/sudoers.d/vagrant"
chmod 0440 "$MNT/etc/sudoers.d/vagrant"
printf '[Match]\nName=en* eth*\n\n[Network]\nDHCP=ipv4\n' >"$MNT/etc/systemd/network/80-vagrant.network"
# sshd must not wait on DNS for the client's name: the management network has no upstream resolver.
echo 'UseDNS no' >"$MNT/etc/ssh/sshd_config.d/agentd-box.conf"
chroot "$MNT" systemctl unmask ssh.service >/dev/null 2>&1
chroot "$MNT" systemctl enable ssh.service systemd-networkd.service >/dev/null 2>&1
# Enabling networkd enables its wait-online unit too, which holds network-online.target for up to two
# minutes; nothing on this machine needs that target, and Vagrant waits for sshd, not for it.
chroot "$MNT" systemctl mask systemd-networkd-wait-online.service >/dev/null 2>&1
# The image's host keys were made when its openssh-server was installed; one box, one set, which is
# fine for a machine that only ever listens on a private management network.
ls "$MNT"/etc/ssh/ssh_host_*_key >/dev/null 2>&1 || chroot "$MNT" ssh-keygen -A >/dev/null
umount "$MNT"
MNT=
qemu-img convert -O qcow2 "$WORK/root.img" "$WORK/box.img"
rm -f "$WORK/root.img"
size_gb=$(($(stat -c %s "$IMAGE/root.img") / 1024 / 1024 / 1024))
printf '{"provider": "libvirt", "format": "qcow2", "virtual_size": %s}\n' "$size_gb" >"$WORK/metadata.json"
printf 'Vagrant.configure("2") do |config|\n  config.vm.provider :libvirt do |lv|\n    lv.driver = "kvm"\n  end\nend\n' \
  >"$WORK/Vagrantfile"
# Uncompressed: the qcow2 is already sparse, and gzip of 1 GiB under load costs more than it saves.
tar -C "$WORK" -cf "$BOX.tmp" metadata.json Vagrantfile box.img
mv "$BOX.tmp" "$BOX"
for old in "$CACHE"/box-*.box; do [ "$old" = "$BOX" ] || rm -f "$old"; done
say "built $BOX in $((SECONDS - started)) s ($(du -h "$BOX" | cut -f1))"
echo "$BOX"
