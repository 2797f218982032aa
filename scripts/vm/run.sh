#!/usr/bin/env bash
# run.sh [--only v2|v1|v2b]... [TEST_PATH...]: `npm run test:vm`. run.sh --image-only: the host's
# tools and the guest image (cached), no boot.
#
# Proves agentd on the two cgroup layouts this host does not have, on a real separate kernel
# (Debian 12's 6.1): a pure cgroup v2 machine (systemd.unified_cgroup_hierarchy=1) and a legacy v1
# one (systemd.unified_cgroup_hierarchy=0 plus systemd.legacy_systemd_cgroup_controller=1: without
# the latter, Debian 12's systemd comes up hybrid, which is this host's layout). Each runs
# scripts/vm/in-vm-test.sh (the subset, or TEST_PATHs). Prints both results and a total, and fails
# if either machine fails, gives no result, or outlives its time limit.
#
# Then the move (docs/fleet.md): each of those boots ends with the move's source half
# (scripts/vm/move-source.sh: a job checkpointed and exported by the guest's agent), and a third
# boot, v2b (the same image as v2, booted afresh: a new kernel, a new agent with a new key), runs
# only test/move/target.test.ts: it imports both archives and restores them. v2 to v2b must pass;
# v1 to v2b is refused (asserted there). --only may be given more than once: `--only v2 --only v2b`
# is the move without v1; `--only v1` or `--only v2` alone runs no move (the source halves run only
# when v2b boots); v2b needs v2.
#
# Two paths (AGENTD_VM_PATH). `vagrant`: scripts/vm/vagrant.sh (`npm run test:vagrant`) brings the
# machines up with the Vagrantfile (`vagrant up v2`, `v1`, then `v2b` for the move), from a box made
# of the image below, and destroys them. `direct` (the default until a whole Vagrant run has passed
# here, docs/vm.md) boots the image with qemu directly:
#
#   - The image is built once from Debian's packages and cached (scripts/vm/build-image.sh).
#   - KVM if the guest kernel boots under it (scripts/vm/accel.sh), software emulation (TCG)
#     otherwise.
#   - No network: qemu -nic none, and -nodefaults so no device is added behind our back.
#   - The guest's disk is a throw-away snapshot of the cached image (-snapshot): every boot starts
#     from the same state.
#   - Every qemu this script starts is killed on timeout, on failure and on Ctrl-C.
#   - Logs of the last run stay in /var/tmp/agentd-vm/last-run/<mode>/ (console.log, suite.log,
#     dmesg.log, result).
#
# Environment: AGENTD_VM_PATH (direct or vagrant, default direct), AGENTD_VM_TIMEOUT (seconds per boot,
# default 2400: the whole v1 subset with the systemd files took about 1700 s here), AGENTD_VM_MEMORY (MiB, default 4096),
# AGENTD_VM_CPUS (default 2), AGENTD_VM_ACCEL (kvm or tcg, default: tried), AGENTD_VM_CACHE
# (default /var/tmp/agentd-vm), AGENTD_VM_PARALLEL (1: v2 and v1 boot side by side, memory
# allowing; 0: one after the other; default: side by side with 2 x AGENTD_VM_CPUS cores or more). Through Vagrant the timeout is per machine, from `vagrant up` to the
# end of its provisioners (default 2100: a machine's ssh, 9p mounts and setup cost about 300 s more
# than a direct boot's), and memory and CPUs become the Vagrantfile's AGENTD_VAGRANT_MEMORY and
# AGENTD_VAGRANT_CPUS unless those are set (docs/vm.md).
set -euo pipefail
cd "$(dirname "$0")/../.."
# shellcheck source=scripts/vm/results.sh
source scripts/vm/results.sh
REPO=$(pwd)
CACHE=${AGENTD_VM_CACHE:-/var/tmp/agentd-vm}
TIMEOUT=${AGENTD_VM_TIMEOUT:-2400}
MEMORY=${AGENTD_VM_MEMORY:-4096}
CPUS=${AGENTD_VM_CPUS:-2}
export AGENTD_VM_CACHE=$CACHE

say() { echo "test:vm: $*"; }
die() {
  echo "test:vm: FAILED: $*" >&2
  exit 1
}

modes=(v2 v1 v2b)
image_only=no
only=()
targets=()
while [ "$#" -gt 0 ]; do
  case $1 in
    --only) only+=("${2:?--only needs v2, v1 or v2b}"); shift ;;
    --image-only) image_only=yes ;;
    -h | --help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) targets+=("$1") ;;
  esac
  shift
done

if [ "${#only[@]}" -gt 0 ]; then
  # In boot order, whatever the order given.
  modes=()
  for m in v2 v1 v2b; do [[ " ${only[*]} " == *" $m "* ]] && modes+=("$m"); done
  for m in "${only[@]}"; do [[ " v2 v1 v2b " == *" $m "* ]] || die "unknown machine $m (v2, v1 or v2b)"; done
fi
moving=no
if [[ " ${modes[*]} " == *" v2b "* ]]; then
  [[ " ${modes[*]} " == *" v2 "* ]] || die "v2b restores what the v2 boot exports: add --only v2"
  moving=yes
fi

[ "$(id -u)" = 0 ] || die "must run as root (debootstrap and chroot build the image; qemu shares the repository)"

case ${AGENTD_VM_PATH:-direct} in
  vagrant)
    export AGENTD_VAGRANT_MEMORY=${AGENTD_VAGRANT_MEMORY:-$MEMORY} AGENTD_VAGRANT_CPUS=${AGENTD_VAGRANT_CPUS:-$CPUS}
    exec bash scripts/vm/vagrant.sh "${modes[@]}" -- "${targets[@]}"
    ;;
  direct) ;;
  *) die "AGENTD_VM_PATH must be direct or vagrant, not $AGENTD_VM_PATH" ;;
esac

# The host's tools, from Debian's archive, when missing.
need=()
command -v qemu-system-x86_64 >/dev/null || need+=(qemu-system-x86)
command -v debootstrap >/dev/null || need+=(debootstrap)
command -v mkfs.ext4 >/dev/null || need+=(e2fsprogs)
if [ "${#need[@]}" -gt 0 ]; then
  say "installing ${need[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi
if [ "$image_only" = yes ]; then
  # The host's tools and the image, nothing else: .ci/run builds the image this way while the host
  # suite runs, and the boots later find it in the cache. No npm run build here, so as not to
  # rebuild dist/ under the running suite.
  IMAGE=$(bash scripts/vm/build-image.sh)
  say "image $IMAGE ready"
  exit 0
fi
[ -d node_modules ] || die "no node_modules in $REPO: run npm ci (or npm run setup) first"

started=$SECONDS
say "npm run build"
npm run --silent build
# The guest has no compiler: its CRIU self-test (scripts/vm/in-vm-test.sh) runs this build of it.
bash scripts/install-criu.sh --compile-selftest dist/criu-selftest
image_started=$SECONDS
IMAGE=$(bash scripts/vm/build-image.sh)
image_time=$((SECONDS - image_started))
say "image $IMAGE ready in $image_time s"

accel=${AGENTD_VM_ACCEL:-$(bash scripts/vm/accel.sh "$IMAGE/vmlinuz")}
if [ "$accel" = kvm ]; then
  machine=(-accel kvm -cpu host)
else
  machine=(-accel tcg,thread=multi -cpu max)
fi
say "accelerator: $accel"

# The guests running now: qemu pid and start time per mode.
declare -A QEMU_PIDS=() T0=() results=() times=()
# stop_qemu PID: TERM, up to 5 s, then KILL; reaped either way.
stop_qemu() {
  if kill -0 "$1" 2>/dev/null; then
    kill -TERM "$1" 2>/dev/null || true
    for _ in $(seq 50); do kill -0 "$1" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$1" 2>/dev/null || true
  fi
  wait "$1" 2>/dev/null || true
}
kill_qemus() {
  local mode
  for mode in "${!QEMU_PIDS[@]}"; do
    stop_qemu "${QEMU_PIDS[$mode]}"
    unset "QEMU_PIDS[$mode]"
  done
}
# The archives are the only large files a move leaves under last-run/; the records beside them stay.
remove_archives() {
  rm -f "$CACHE"/last-run/{v2,v1}/move/*.agentd-archive "$CACHE"/last-run/v2b/move-in/*.agentd-archive
}
trap 'kill_qemus; remove_archives' EXIT
trap 'exit 130' INT TERM

# start_boot MODE: one guest, started; finish_boots waits for it.
start_boot() {
  local mode=$1 out=$CACHE/last-run/$1 cgroup_args expect
  case $mode in
    v2 | v2b) cgroup_args="systemd.unified_cgroup_hierarchy=1" expect=unified ;;
    v1) cgroup_args="systemd.unified_cgroup_hierarchy=0 systemd.legacy_systemd_cgroup_controller=1" expect=legacy ;;
    *) die "unknown mode $mode (v2, v1 or v2b)" ;;
  esac
  rm -rf "$out"
  mkdir -p "$out"
  echo "$expect" >"$out/expect"
  if [ "$mode" = v2b ]; then
    # The target half only, with what the source halves left.
    echo dist/test/move/target.test.js >"$out/targets"
    mkdir -p "$out/move-in"
    for m in v2 v1; do
      if [ -d "$CACHE/last-run/$m/move" ]; then cp -a "$CACHE/last-run/$m/move/." "$out/move-in/"; fi
    done
  else
    printf '%s\n' "${targets[@]}" >"$out/targets"
    if [ "$moving" = yes ]; then echo "$mode" >"$out/move-source"; fi
  fi
  say "$mode: booting ($cgroup_args), at most $TIMEOUT s; console: $out/console.log"
  # panic=-1 and -no-reboot: a kernel panic ends qemu at once instead of waiting for the timeout.
  qemu-system-x86_64 -nodefaults -no-user-config -nic none -display none -no-reboot \
    "${machine[@]}" -smp "$CPUS" -m "$MEMORY" \
    -kernel "$IMAGE/vmlinuz" -initrd "$IMAGE/initrd.img" \
    -append "root=/dev/vda rw console=ttyS0 panic=-1 $cgroup_args agentd.vmtest" \
    -drive "file=$IMAGE/root.img,if=virtio,format=raw,snapshot=on" \
    -virtfs "local,path=$REPO,mount_tag=agentd-repo,security_model=none,readonly=on,id=repo" \
    -virtfs "local,path=$out,mount_tag=agentd-out,security_model=none,id=out" \
    -serial "file:$out/console.log" -monitor none \
    >"$out/qemu.log" 2>&1 &
  QEMU_PIDS[$mode]=$!
  T0[$mode]=$SECONDS
}

# finish_boot MODE: the guest has ended or run out of time; its result and time.
finish_boot() {
  local mode=$1 out=$CACHE/last-run/$1 pid=${QEMU_PIDS[$1]} result
  if kill -0 "$pid" 2>/dev/null; then
    result="timed out after $TIMEOUT s"
  elif [ -s "$out/result" ]; then
    result=$(cat "$out/result")
  else
    result="no result (the guest did not finish; see $out/console.log)"
  fi
  stop_qemu "$pid"
  unset "QEMU_PIDS[$mode]"
  times[$mode]=$((SECONDS - T0[$mode]))
  results[$mode]=$result
  if ! [[ "$result" =~ ^[0-9]+\ passed,\ 0\ failed$ ]]; then
    say "$mode: last lines of the guest's output:"
    tail -n 40 "$out/suite.log" 2>/dev/null || tail -n 40 "$out/console.log" 2>/dev/null || true
    [ -s "$out/qemu.log" ] && cat "$out/qemu.log"
  fi
  say "$mode: $result (${times[$mode]} s, boot and tests)"
}

# finish_boots: waits until every running guest has powered off or outlived its limit.
finish_boots() {
  local mode
  while [ "${#QEMU_PIDS[@]}" -gt 0 ]; do
    for mode in "${!QEMU_PIDS[@]}"; do
      if ! kill -0 "${QEMU_PIDS[$mode]}" 2>/dev/null || [ "$SECONDS" -ge $((T0[$mode] + TIMEOUT)) ]; then finish_boot "$mode"; fi
    done
    sleep 2
  done
}

# v2 and v1 side by side where the machine has the cores and memory for both (AGENTD_VM_PARALLEL=1
# asks for it, 0 forbids it); v2b after both, since it restores what they export. Each guest keeps
# its own time limit. Under software emulation a guest is CPU-bound: on this project's 2-core
# machine two guests side by side each ran 2.2 times slower than alone (docs/vm.md, "Timings"), so
# there they go one after the other.
available_mib=$(awk '/^MemAvailable:/ { print int($2 / 1024) }' /proc/meminfo)
cores=$(nproc)
parallel=${AGENTD_VM_PARALLEL:-$([ "$cores" -ge $((2 * CPUS)) ] && echo 1 || echo 0)}
if [ "$parallel" = 1 ] && [ "$available_mib" -lt $((2 * MEMORY + 2048)) ]; then
  say "one guest at a time: $available_mib MiB available, two guests of $MEMORY MiB need $((2 * MEMORY + 2048))"
  parallel=0
fi
[ "$parallel" = 1 ] && say "v2 and v1 side by side ($cores cores, $available_mib MiB available)"
# The previous run's move records must not pass for this one's.
rm -rf "$CACHE"/last-run/{v2,v1}/move "$CACHE"/last-run/{v2,v1}/move-source-result
for mode in "${modes[@]}"; do
  [ "$mode" = v2b ] && finish_boots
  start_boot "$mode"
  [ "$parallel" = 1 ] || finish_boots
done
finish_boots

say "summary (image $image_time s, total $((SECONDS - started)) s, $accel):"
status=0
if [ "$moving" = yes ]; then
  move_summary test:vm "$CACHE/last-run" "$CACHE/last-run/MACHINE/console.log" "${modes[@]}" || status=1
fi
{
  for mode in "${modes[@]}"; do
    echo "$mode: ${results[$mode]}"
    if [ "$moving" = yes ] && [ "$mode" != v2b ]; then
      echo "$mode move source: $(cat "$CACHE/last-run/$mode/move-source-result" 2>/dev/null || echo 'no result')"
    fi
  done
} | sum_results vm || status=1
exit "$status"
