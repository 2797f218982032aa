#!/usr/bin/env bash
# build-image.sh: builds (or finds in the cache) the Debian 12 guest image that `npm run test:vm`'s
# box is made of (scripts/vm/build-box.sh), and prints the directory holding it: root.img (a bare
# ext4 file system, no partition table), vmlinuz and initrd.img (Debian 12's 6.1 kernel, which
# libvirt boots directly, so the cgroup layout is chosen on the kernel command line: no grub, no
# reboot).
#
# Made from Debian's packages alone: debootstrap a minimal bookworm, then apt-get install the rest
# inside the chroot (debootstrap's own --include leaves some packages unconfigured). Node 20 is the
# host's own node binary, copied in: Debian 12's nodejs is Node 18, the guest has no network, and the
# repository's node_modules (node-pty is compiled against Node 20's ABI) come over 9p, so the guest
# must run the same Node major as the host. The host's node links only against glibc 2.36, like
# Debian 12; the script checks that with ldd before copying.
#
# Cache: /var/tmp/agentd-vm/image-<hash>, where <hash> covers everything the image is made from (this
# script and the node binary). A run with an unchanged recipe only prints the path.
# Older images are removed after a successful build. About 6 minutes on 2 cores.
#
# Nothing is left mounted after a failure: every mount this script makes is undone by a trap. The
# file system is written with `mkfs.ext4 -d` from the chroot directory, so no loop device is used.
set -euo pipefail

HERE=$(cd "$(dirname "$0")" && pwd)
CACHE=${AGENTD_VM_CACHE:-/var/tmp/agentd-vm}
SUITE=bookworm
IMAGE_SIZE=4G
# What the guest needs: the kernel and systemd; what the suite calls (perl for the workloads,
# flock/setpriv/mount from util-linux, ps/pgrep, getent from libc-bin); Debian 12's CRIU 3.17.1,
# which passes `criu check` on Debian 12's own 6.1 kernel, and iptables, which it runs to lock TCP
# connections it dumps (scripts/setup.sh installs it on a host); sudo and openssh-server, through
# which Vagrant reaches the box (build-box.sh enables sshd); the programs test/fidelity checkpoints
# (python3, wget, redis-server, nginx-light, xz-utils) and strace, with which test/criu/stop-rule
# parks CRIU.
PACKAGES=(linux-image-amd64 systemd-sysv udev kmod dbus criu perl util-linux procps iproute2 iptables psmisc
  e2fsprogs sudo openssh-server ca-certificates
  python3 wget redis-server nginx-light xz-utils strace)

say() { echo "build-image: $*" >&2; }
die() {
  echo "build-image: FAILED: $*" >&2
  exit 1
}

[ "$(id -u)" = 0 ] || die "must run as root (debootstrap, chroot)"
NODE=$(command -v node) || die "no node on PATH to copy into the image"
NODE=$(readlink -f "$NODE")

# Contents only, never paths: two clones of the repository share one cached image.
recipe_hash() {
  {
    sha256sum <"$HERE/build-image.sh"
    sha256sum <"$NODE"
  } | sha256sum | cut -c1-16
}

HASH=$(recipe_hash)
IMAGE=$CACHE/image-$HASH
if [ -f "$IMAGE/ready" ]; then
  say "cached image $IMAGE (recipe $HASH)"
  echo "$IMAGE"
  exit 0
fi

mkdir -p "$CACHE"
# One build at a time; a second caller waits, then finds the first's image.
exec 8>"$CACHE/.build.lock"
flock 8
if [ -f "$IMAGE/ready" ]; then
  echo "$IMAGE"
  exit 0
fi

# Node must load in the guest: only glibc's own libraries, none newer than Debian 12's 2.36.
if ldd "$NODE" | grep -v -E 'linux-vdso|ld-linux|/lib/x86_64-linux-gnu/lib(c|m|dl|pthread|stdc\+\+|gcc_s)\.so' | grep -q .; then
  die "$NODE links against libraries Debian 12's base does not have: $(ldd "$NODE" | tr '\n' ' ')"
fi
NODE_MAJOR=$("$NODE" -p 'process.versions.node.split(".")[0]')
[ "$NODE_MAJOR" -ge 20 ] || die "$NODE is Node $NODE_MAJOR; the project needs Node 20"

# The archive the host already uses for bookworm (no other source is reachable here).
MIRROR=${AGENTD_VM_MIRROR:-}
if [ -z "$MIRROR" ] && [ -f /etc/apt/sources.list.d/debian.sources ]; then
  MIRROR=$(awk '/^URIs:/ { print $2; exit }' /etc/apt/sources.list.d/debian.sources)
fi
MIRROR=${MIRROR:-http://deb.debian.org/debian}
SECURITY=${AGENTD_VM_SECURITY_MIRROR:-}
if [ -z "$SECURITY" ] && [ -f /etc/apt/sources.list.d/debian.sources ]; then
  SECURITY=$(awk '/^URIs:/ { uri = $2 } /^Suites:/ && /-security/ { print uri; exit }' /etc/apt/sources.list.d/debian.sources)
fi
SECURITY=${SECURITY:-http://deb.debian.org/debian-security}

WORK=$(mktemp -d "$CACHE/build-$HASH.XXXXXX")
ROOT=$WORK/root
MOUNTS=()
cleanup() {
  local i
  for ((i = ${#MOUNTS[@]} - 1; i >= 0; i--)); do
    umount -l "${MOUNTS[i]}" 2>/dev/null || true
  done
  # debootstrap mounts proc and sys in the target itself and may leave them after a failure.
  for m in "$ROOT/proc" "$ROOT/sys" "$ROOT/dev/pts" "$ROOT/dev"; do
    mountpoint -q "$m" 2>/dev/null && umount -l "$m"
  done
  rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

bind() {
  mount --bind "$1" "$ROOT$1"
  MOUNTS+=("$ROOT$1")
}

started=$SECONDS
say "recipe $HASH: debootstrap $SUITE from $MIRROR (log: $WORK/debootstrap.log until done)"
# Downloaded packages are kept (not part of the recipe) so that a rebuild fetches only what changed.
DEBS=$CACHE/debs
mkdir -p "$DEBS/debootstrap" "$DEBS/apt/partial"
if ! debootstrap --variant=minbase --cache-dir="$DEBS/debootstrap" "$SUITE" "$ROOT" "$MIRROR" >"$WORK/debootstrap.log" 2>&1; then
  tail -n 20 "$WORK/debootstrap.log" >&2
  die "debootstrap failed"
fi
say "debootstrap done in $((SECONDS - started)) s"

# Packages are installed, not started: no daemon may run in the chroot.
printf '#!/bin/sh\nexit 101\n' >"$ROOT/usr/sbin/policy-rc.d"
chmod +x "$ROOT/usr/sbin/policy-rc.d"
bind /proc
bind /sys
bind /dev
bind /dev/pts
mount --bind "$DEBS/apt" "$ROOT/var/cache/apt/archives"
MOUNTS+=("$ROOT/var/cache/apt/archives")
cp /etc/resolv.conf "$ROOT/etc/resolv.conf"
# With the stable updates and security fixes, as the host has them.
printf 'deb %s %s main\ndeb %s %s-updates main\ndeb %s %s-security main\n' \
  "$MIRROR" "$SUITE" "$MIRROR" "$SUITE" "$SECURITY" "$SUITE" >"$ROOT/etc/apt/sources.list"
say "installing ${PACKAGES[*]}"
if ! chroot "$ROOT" /usr/bin/env DEBIAN_FRONTEND=noninteractive bash -c \
  "apt-get update -qq && apt-get install -y -qq --no-install-recommends ${PACKAGES[*]}" >"$WORK/apt.log" 2>&1; then
  tail -n 20 "$WORK/apt.log" >&2
  die "apt-get install in the chroot failed"
fi
rm -f "$ROOT/usr/sbin/policy-rc.d"
say "packages installed ($((SECONDS - started)) s so far)"

# Node 20, the host's own binary. No npm: provision.sh runs what `npm run setup` runs, and the
# tests run with node --test.
install -m 0755 "$NODE" "$ROOT/usr/local/bin/node"

# The guest's configuration: root file system, name, a quick boot.
echo 'LABEL=agentd-root / ext4 rw,relatime 0 1' >"$ROOT/etc/fstab"
echo agentd-vm >"$ROOT/etc/hostname"
printf '127.0.0.1 localhost\n127.0.1.1 agentd-vm\n' >"$ROOT/etc/hosts"
: >"$ROOT/etc/resolv.conf"
chroot "$ROOT" passwd -d root >/dev/null
# Timers and services that only cost time in a throw-away guest with no network.
chroot "$ROOT" systemctl mask apt-daily.timer apt-daily-upgrade.timer e2scrub_all.timer fstrim.timer \
  systemd-timesyncd.service ssh.service >/dev/null 2>&1 || true
# The fidelity tests start their own redis and nginx on free loopback ports; the packages' system-wide
# services would only hold port 80 and 6379 and cost boot time.
chroot "$ROOT" systemctl mask nginx.service redis-server.service >/dev/null 2>&1 || true
# The 9p modules are in the root file system; load them early.
printf '9p\n9pnet_virtio\n' >"$ROOT/etc/modules-load.d/agentd-9p.conf"

for ((i = ${#MOUNTS[@]} - 1; i >= 0; i--)); do umount "${MOUNTS[i]}"; done
MOUNTS=()

mkdir -p "$WORK/image"
KERNEL=$(cd "$ROOT/boot" && ls vmlinuz-* | sort -V | tail -n 1) || die "no kernel in $ROOT/boot"
KVER=${KERNEL#vmlinuz-}
[ -f "$ROOT/boot/initrd.img-$KVER" ] || die "no initrd.img-$KVER in $ROOT/boot"
cp "$ROOT/boot/vmlinuz-$KVER" "$WORK/image/vmlinuz"
cp "$ROOT/boot/initrd.img-$KVER" "$WORK/image/initrd.img"
say "writing the ext4 file system ($IMAGE_SIZE, sparse)"
truncate -s "$IMAGE_SIZE" "$WORK/image/root.img"
mkfs.ext4 -q -L agentd-root -d "$ROOT" "$WORK/image/root.img" || die "mkfs.ext4 -d failed"
{
  echo "recipe $HASH"
  echo "built $(date -u +%Y-%m-%dT%H:%M:%SZ) in $((SECONDS - started)) s"
  echo "node $("$NODE" --version) from $NODE"
  echo "kernel $KVER"
  chroot "$ROOT" dpkg-query -W -f='${Package} ${Version}\n' criu linux-image-amd64 systemd
} >"$WORK/image/ready"

rm -rf "$IMAGE"
mv "$WORK/image" "$IMAGE"
for old in "$CACHE"/image-*; do
  [ "$old" = "$IMAGE" ] || rm -rf "$old"
done
say "built $IMAGE in $((SECONDS - started)) s"
echo "$IMAGE"
