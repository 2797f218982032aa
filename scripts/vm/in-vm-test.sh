#!/usr/bin/env bash
# in-vm-test.sh [--build] [--expect unified|hybrid|legacy] [TEST_PATH...]
#
# The one in-VM test entry point (`npm run test:integration`), for the test:vm guests and for
# Vagrant machines alike. As root, from the repository:
#   1. detects this machine's cgroup layout from /proc/self/mountinfo: pure v2 ("unified", cgroup2
#      at the root), "hybrid" (v1 controllers plus a cgroup2 mount) or legacy v1 ("legacy", no
#      cgroup2 at all), and exports it to the tests as
#        AGENTD_TEST_CGROUP_MODE=unified|hybrid|legacy
#        AGENTD_TEST_HIERARCHIES=v2 | v1,v2 | v1   (the freezer hierarchies this machine has)
#      With --expect, a layout other than the one expected is an error (test:vm boots each guest in
#      a given layout and must not report a v2 result for a guest that came up hybrid);
#   2. with --build (or when dist/ is missing) runs `npm run build` first;
#   3. runs the integration subset (below, or the paths given) with node's test runner, one file at
#      a time, as scripts/test.sh does;
#   4. prints the skip reasons, then a last line exactly `N passed, N failed`, read from the test
#      runner's own summary (`ℹ pass N`, `ℹ fail N`; cancelled tests count as failed), and exits
#      non-zero if anything failed or the runner gave no summary.
#
# The subset, and why (docs/vm.md says the same): the tests whose outcome depends on the kernel's
# cgroup layout and on CRIU, and that find the hierarchies through src/cgroup's mount discovery.
# Pure logic tests (argument building, log and stats parsing, the restart protocol) give the same
# answer on any kernel and are left to the host suite; so are tests that are too slow under
# software emulation for what they add, and tests whose helpers assume hybrid paths (see docs/vm.md).
set -euo pipefail

DEFAULT_SUBSET=(
  dist/test/cgroup/freezer.test.js
  dist/test/cgroup/resolve.test.js
  dist/test/lock/lock-file.test.js
  dist/test/lock/checkpointing.test.js
  dist/test/lock/processes.test.js
  dist/test/criu/dump-restore.test.js
  dist/test/checkpoint/checkpoint.test.js
  dist/test/checkpoint/failures.test.js
  # Pre-dumps need a kernel that tracks the pages a task writes: Debian's does, this project's host
  # does not, so only the guests run the pre-dump-and-restore test.
  dist/test/checkpoint/pre-dump.test.js
  dist/test/daemon/api.test.js
  dist/test/daemon/checkpoint.test.js
  dist/test/systemd/units.test.js
  dist/test/systemd/unit.test.js
  dist/test/systemd/journal.test.js
  # Programs from Debian's archive (the image installs them; AGENTD_REQUIRE_PROGRAMS below turns a
  # missing one into a failure, not a skip), and the stop rule, which parks CRIU with strace.
  dist/test/fidelity/servers.test.js
  dist/test/fidelity/compute.test.js
  dist/test/fidelity/terminal.test.js
  dist/test/criu/stop-rule.test.js
  # agentd.service as `npm run setup` installs it, under systemd as PID 1 (docs/vm.md, "systemd in the
  # guests"): socket activation, Type=notify, the journal, unit names, systemctl stop, restart, kill
  # and the watchdog during a dump, restores as scopes, and services with Restart=.
  dist/test/systemd/service.test.js
  dist/test/systemd/checkpoint-stop.test.js
  dist/test/systemd/checkpoint-kill.test.js
  dist/test/systemd/restore-scope.test.js
  dist/test/systemd/service-restart.test.js
)

cd "$(dirname "$0")/../.."
build=no
expect=
targets=()
while [ "$#" -gt 0 ]; do
  case $1 in
    --build) build=yes ;;
    --expect) expect=${2:?--expect needs unified, hybrid or legacy}; shift ;;
    --expect=*) expect=${1#--expect=} ;;
    -h | --help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) targets+=("$1") ;;
  esac
  shift
done
[ "${#targets[@]}" -gt 0 ] || targets=("${DEFAULT_SUBSET[@]}")

fail() {
  echo "in-vm-test: $*" >&2
  echo "0 passed, 1 failed"
  exit 1
}

[ "$(id -u)" = 0 ] || fail "must run as root (the tests drive real cgroups and CRIU)"

# The layout, from the mount table: a cgroup2 mount of a hierarchy root, and v1 mounts (one of them
# carrying the freezer controller). Field 4 is the mount's root, 5 its mount point; after " - " come
# the file system type, the source and the super options.
read -r v2_at v1_freezer_at any_v1 < <(awk '
  { for (i = 1; i <= NF; i++) if ($i == "-") break
    if ($4 != "/") next
    fstype = $(i + 1); opts = "," $(i + 3) ","
    if (fstype == "cgroup2" && v2 == "") v2 = $5
    if (fstype == "cgroup") { v1 = "yes"; if (opts ~ /,freezer,/ && fz == "") fz = $5 }
  }
  END { print (v2 == "" ? "-" : v2), (fz == "" ? "-" : fz), (v1 == "" ? "no" : "yes") }' /proc/self/mountinfo)
if [ "$v2_at" != - ] && [ "$any_v1" = yes ]; then
  mode=hybrid
elif [ "$v2_at" != - ]; then
  mode=unified
elif [ "$any_v1" = yes ]; then
  mode=legacy
else
  fail "no cgroup file system is mounted"
fi
hierarchies=()
[ "$v1_freezer_at" != - ] && hierarchies+=(v1)
[ "$v2_at" != - ] && hierarchies+=(v2)
[ "${#hierarchies[@]}" -gt 0 ] || fail "cgroup mode $mode but no freezer hierarchy (no v1 freezer, no cgroup2)"
export AGENTD_TEST_CGROUP_MODE=$mode
# The image has every program test/fidelity needs: here a missing one is a failure, not a skip.
export AGENTD_REQUIRE_PROGRAMS=1
AGENTD_TEST_HIERARCHIES=$(IFS=,; echo "${hierarchies[*]}")
export AGENTD_TEST_HIERARCHIES
echo "in-vm-test: kernel $(uname -r); cgroup mode $mode (cgroup2 at ${v2_at/#-/none}, v1 freezer at ${v1_freezer_at/#-/none}); AGENTD_TEST_HIERARCHIES=$AGENTD_TEST_HIERARCHIES"
if [ -n "$expect" ] && [ "$expect" != "$mode" ]; then
  fail "this machine was meant to come up in cgroup mode $expect but is $mode (cgroup options on the kernel command line: $(grep -o 'systemd\.[a-z_]*cgroup[a-z_]*=[^ ]*' /proc/cmdline | tr '\n' ' '))"
fi

# The CRIU this machine has must pass the same functional self-test as `npm run setup` asks of one
# (docs/criu-selection.md), offline: nothing is downloaded or built here, and a CRIU that fails is
# the end of the run, with the reason. Where there is no compiler (the test:vm image), the
# self-test program is the one the host compiled into dist/ (scripts/vm/vagrant.sh).
selection=(--offline)
if ! command -v cc >/dev/null; then
  [ -x dist/criu-selftest ] ||
    fail "no C compiler here and no dist/criu-selftest to test CRIU with (bash scripts/install-criu.sh --compile-selftest dist/criu-selftest, on the host)"
  selection+=(--selftest-program dist/criu-selftest)
fi
if ! criu_out=$(bash scripts/install-criu.sh "${selection[@]}" 2>&1); then
  sed 's/^/in-vm-test: /' <<<"$criu_out" >&2
  fail "no CRIU on this machine passes the self-test (kernel $(uname -r)); reasons above"
fi
sed 's/^/in-vm-test: /' <<<"$criu_out"
echo "in-vm-test: node $(node --version)"

if [ "$build" = yes ] || [ ! -d dist/test ]; then
  echo "in-vm-test: npm run build"
  npm run --silent build
fi
for t in "${targets[@]}"; do
  [ -e "$t" ] || fail "$t does not exist (build first: npm run build)"
done

log=$(mktemp "${TMPDIR:-/tmp}/agentd-in-vm-test.XXXXXX")
trap 'rm -f "$log"' EXIT
echo "in-vm-test: node --test ${targets[*]}"
started=$SECONDS
status=0
node --test --test-concurrency=1 --test-timeout=600000 --test-reporter=spec "${targets[@]}" 2>&1 | tee "$log" || status=$?
echo "in-vm-test: the tests took $((SECONDS - started)) s"

# The spec reporter's summary ends the output: "ℹ pass 12", "ℹ fail 0", "ℹ cancelled 0", ...
summary() { sed -n "s/^ℹ $1 \([0-9][0-9]*\)\$/\1/p" "$log" | tail -n 1; }
pass=$(summary pass)
failed=$(summary fail)
cancelled=$(summary cancelled)
skipped=$(summary skipped)
if [ -z "$pass" ] || [ -z "$failed" ]; then
  echo "in-vm-test: node's test runner printed no summary (exit status $status)" >&2
  echo "${pass:-0} passed, $((${failed:-0} + 1)) failed"
  exit 1
fi
failed=$((failed + ${cancelled:-0}))
# A skipped suite counts as one suite, not as its tests, so list what was skipped and why.
skips=$(sed -n 's/^ *﹣ \(.*\) ([0-9.]*ms) # \(.*\)$/  \1: \2/p' "$log")
if [ -n "$skips" ]; then
  echo "in-vm-test: skipped (${skipped:-0} tests, plus any whole suites listed):"
  echo "$skips"
fi
echo "$pass passed, $failed failed"
[ "$failed" = 0 ] && [ "$status" = 0 ]
