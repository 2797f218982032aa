#!/usr/bin/env bash
# accel.sh KERNEL: prints `kvm` if a guest kernel really runs under KVM on this machine, else `tcg`.
#
# Decided by trying, not by reading /proc/cpuinfo: on this project's development machine /dev/kvm
# opens and the CPU flags say vmx, yet `qemu -accel kvm` never gets a stock kernel past the boot
# loader (nothing on the serial console after 30 s, where the same kernel under TCG prints its
# banner within a second or two). So KERNEL (the guest image's vmlinuz) is booted under KVM with no
# disk and no initrd, and KVM counts as working only if the kernel's `Linux version` banner reaches
# the serial console within AGENTD_VM_KVM_PROBE_SECONDS (default 10). The probe's qemu is killed
# either way; it never gets further than a panic for want of a root file system.
set -euo pipefail
KERNEL=${1:?usage: accel.sh KERNEL}
LIMIT=${AGENTD_VM_KVM_PROBE_SECONDS:-10}

if ! [ -r /dev/kvm ] || ! [ -w /dev/kvm ]; then
  echo tcg
  exit 0
fi
log=$(mktemp)
# Where KVM is broken qemu may abort (here: "failed to set MSR 0x10a"), and bash would report that
# on its stderr to whoever called us: nothing else is said there from now on.
exec 2>/dev/null
qemu-system-x86_64 -nodefaults -no-user-config -nic none -display none -no-reboot -monitor none \
  -accel kvm -cpu host -m 256 -kernel "$KERNEL" -append "console=ttyS0 panic=-1" \
  -serial "file:$log" >/dev/null &
pid=$!
trap 'kill -KILL "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; rm -f "$log"' EXIT
answer=tcg
for _ in $(seq $((LIMIT * 5))); do
  if grep -q 'Linux version' "$log" 2>/dev/null; then
    answer=kvm
    break
  fi
  kill -0 "$pid" 2>/dev/null || break
  sleep 0.2
done
echo "$answer"
