#!/usr/bin/env bash
# vagrant-inside.sh MACHINE... -- [TEST_PATH...]: the part of `npm run test:vm` that runs inside
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

say() { echo "test:vm: $*"; }
die() {
  echo "test:vm: FAILED: $*" >&2
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
trap 'exit 143' TERM
trap 'exit 130' INT

# Per machine, from `vagrant up` to the end of its provisioners. The longest whole machine measured
# on an idle 2-core host under emulation took 788 s (docs/vm.md, "Timings"); the limit leaves room
# for a machine that runs 2.5 times slower than that.
TIMEOUT=${AGENTD_VM_TIMEOUT:-2100}
[[ "$TIMEOUT" =~ ^[1-9][0-9]*$ ]] || die "AGENTD_VM_TIMEOUT must be a whole number of seconds, not $TIMEOUT"
moving=no
[[ " ${machines[*]} " == *" v2b "* ]] && moving=yes
# Each machine's read-write share ($LOGS/<machine>, at /agentd-out in the guest): what the host asks
# for (expect, move-source, move-in) and what the guest leaves (suite.log, result, the move's files).
export AGENTD_VAGRANT_OUT_DIR=$LOGS

UP_PID=
# stop_up: ends a `vagrant up` that ran past its time limit, with everything it started (its own
# process group: ssh, the provisioner's session); the domain itself goes with `vagrant destroy`.
stop_up() {
  [ -n "$UP_PID" ] || return 0
  kill -TERM -- "-$UP_PID" 2>/dev/null || true
  for _ in $(seq 50); do kill -0 "$UP_PID" 2>/dev/null || break; sleep 0.2; done
  kill -KILL -- "-$UP_PID" 2>/dev/null || true
  wait "$UP_PID" 2>/dev/null || true
  UP_PID=
}
trap 'stop_up; stop_all' EXIT

declare -A results
for machine in "${machines[@]}"; do
  log=$LOGS/$machine.log
  out=$LOGS/$machine
  rm -rf "$out"
  mkdir -p "$out"
  machine_targets=("${targets[@]}")
  case $machine in
    v1) echo legacy >"$out/expect" ;;
    *) echo unified >"$out/expect" ;;
  esac
  if [ "$machine" = v2b ]; then
    # The target half only, with what the source halves left (the move, docs/fleet.md).
    machine_targets=(dist/test/move/target.test.js)
    mkdir -p "$out/move-in"
    for m in v2 v1; do
      if [ -d "$LOGS/$m/move" ]; then cp -a "$LOGS/$m/move/." "$out/move-in/"; fi
    done
  elif [ "$moving" = yes ]; then
    echo "$machine" >"$out/move-source"
  fi
  t=$SECONDS
  say "vagrant up $machine (libvirt driver $AGENTD_VAGRANT_LIBVIRT_DRIVER; at most $TIMEOUT s; log $log)"
  # In the background and waited for: a TERM reaches this script at once, not after the run. In a
  # process group of its own, so that a run past the time limit can be ended with all it started.
  AGENTD_TEST_TARGETS="${machine_targets[*]}" setsid vagrant up "$machine" >"$log" 2>&1 &
  UP_PID=$!
  up=$UP_PID
  # Vagrant draws the box upload's progress bar with carriage returns: one line per update is noise.
  tail -n +1 -f "$log" --pid "$up" | sed -u -e 's/\r/\n/g' -e 's/Progress: [0-9]*%//g' -e 's/\x1b\[K//g' |
    grep --line-buffered -v '^$' | sed -u "s/^/$machine| /" &
  tailer=$!
  # When Vagrant first reached the guest's sshd: the boot's share of the time up takes.
  (
    while ! grep -q 'Machine booted and ready' "$log" 2>/dev/null; do sleep 1; done
    step "$machine-ssh" $((SECONDS - t))
  ) &
  watcher=$!
  deadline=$((t + TIMEOUT))
  while kill -0 "$up" 2>/dev/null && [ "$SECONDS" -lt "$deadline" ]; do sleep 2; done
  timed_out=no
  up_status=0
  if kill -0 "$up" 2>/dev/null; then
    timed_out=yes
    stop_up
  else
    wait "$up" || up_status=$?
    UP_PID=
  fi
  wait "$tailer" 2>/dev/null || true
  kill "$watcher" 2>/dev/null || true
  wait "$watcher" 2>/dev/null || true
  step "$machine-up" $((SECONDS - t))
  # The provisioners print when each phase ended (provision.sh); the rest of up is boot and ssh.
  grep -oE 'provision: (setup|suite) took [0-9]+ s' "$log" | sed "s/^provision: /$machine-/; s/ took / /; s/ s$//" >>"$LOGS/timings" || true
  grep -oE 'copied .* in [0-9]+ s' "$log" | sed -E "s/.* in ([0-9]+) s/$machine-copy \1/" >>"$LOGS/timings" || true
  grep -oE "the move's source half: .* in [0-9]+ s" "$log" | sed -E "s/.* in ([0-9]+) s/$machine-move-source \1/" >>"$LOGS/timings" || true
  if [ "$timed_out" = yes ]; then
    results[$machine]="timed out after $TIMEOUT s"
  elif [[ "$(cat "$out/result" 2>/dev/null)" =~ ^[0-9]+\ passed,\ [0-9]+\ failed$ ]]; then
    results[$machine]=$(cat "$out/result")
  else
    results[$machine]=$(grep -oE '[0-9]+ passed, [0-9]+ failed' "$log" | tail -n 1 || true)
    [ -n "${results[$machine]}" ] || results[$machine]="no result (vagrant up exited $up_status; see $log)"
  fi
  if ! [[ "${results[$machine]}" =~ ^[0-9]+\ passed,\ 0\ failed$ ]]; then
    say "$machine: the last lines of its suite:"
    tail -n 40 "$out/suite.log" 2>/dev/null || tail -n 40 "$log" 2>/dev/null || true
    # What the guest's kernel reported going wrong (a stall, a lockup, an oops), from its serial console.
    grep -E -A14 'soft lockup|self-detected stall|blocked for more than|BUG:|Oops|Kernel panic' "$LOGS/$machine.console.log" 2>/dev/null |
      head -n 80 || true
  fi
  t=$SECONDS
  vagrant destroy -f "$machine" >>"$log" 2>&1 || say "vagrant destroy $machine failed (see $log)"
  step "$machine-destroy" $((SECONDS - t))
  say "$machine: ${results[$machine]}"
done

status=0
if [ "$moving" = yes ]; then
  move_summary test:vm "$LOGS" "$LOGS/MACHINE.log" "${machines[@]}" || status=1
fi
{
  for machine in "${machines[@]}"; do
    echo "$machine: ${results[$machine]}"
    if [ "$moving" = yes ] && [ "$machine" != v2b ]; then
      echo "$machine move source: $(cat "$LOGS/$machine/move-source-result" 2>/dev/null || echo 'no result')"
    fi
  done
} | sum_results vm || status=1
exit "$status"
