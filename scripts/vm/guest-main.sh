#!/usr/bin/env bash
# guest-main.sh REPO OUT: what a test:vm guest runs once booted (called by the image's
# /usr/local/sbin/agentd-vm-test with the repository share mounted read-only at REPO and the output
# share at OUT). Reads what the host asked for from OUT (expect: the cgroup mode this boot must be
# in; targets: test paths, one a line, optional), copies the repository to the guest's disk, runs
# scripts/vm/in-vm-test.sh there, and leaves in OUT
#   suite.log  everything the tests printed
#   result     the last line, `N passed, N failed` (the host reads this: qemu's exit status cannot
#              carry the guest's result)
#   dmesg.log  the kernel's messages, for when something went wrong
# The machine powers off when this exits (agentd-vm-test.service's SuccessAction/FailureAction).
set -uo pipefail
REPO=$1
OUT=$2
export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
export HOME=/root LANG=C.UTF-8
# Run from a local copy, not from the share: every file node opens over 9p costs round trips
# through the emulated machine. Measured under TCG: `agentd --help` took 10.0 s from the share and
# 5.8 s from a local copy, and agents started from the share missed the tests' 20 s start limit;
# the copy itself takes about 40 s. It is the repository as the host has it, without .git; with the
# whole of node_modules, so that `npm run setup` finds every locked package there and fetches nothing.
t0=$(date +%s%N)
rm -rf /var/lib/agentd-repo
mkdir -p /var/lib/agentd-repo
tar -C "$REPO" --exclude=./.git -cf - . | tar -C /var/lib/agentd-repo -xf - || exit 1
echo "guest: copied the repository to /var/lib/agentd-repo in $(( ($(date +%s%N) - t0) / 1000000 )) ms" | tee "$OUT/timing.log"
cd /var/lib/agentd-repo || exit 1

args=()
[ -s "$OUT/expect" ] && args+=(--expect "$(cat "$OUT/expect")")
if [ -s "$OUT/targets" ]; then
  while IFS= read -r t; do [ -n "$t" ] && args+=("$t"); done <"$OUT/targets"
fi

# The move's target half (v2b, scripts/vm/run.sh): where the host put the other boots' archives.
if [ -d "$OUT/move-in" ]; then export AGENTD_MOVE_IN=$OUT/move-in AGENTD_MOVE_RESULT=$OUT/move-result; fi

# The product installed as README tells a user to, before any test: `npm run setup` (the guest has
# node but no npm, so the script npm would run). Offline it installs nothing: node_modules and dist
# are complete, the image's CRIU passes the self-test, and packages only the tests use are named and
# left out. It leaves agentd.socket and agentd.service enabled and running under this guest's
# systemd; test/systemd checks them.
echo "guest: up $(cut -d' ' -f1 /proc/uptime) s after boot; running scripts/setup.sh (npm run setup)" | tee -a "$OUT/timing.log" >"$OUT/suite.log"
t0=$(date +%s%N)
if bash scripts/setup.sh 2>&1 | tee -a "$OUT/suite.log"; [ "${PIPESTATUS[0]}" != 0 ]; then
  echo "guest: npm run setup failed; its output is above" | tee -a "$OUT/suite.log"
  echo "0 passed, 1 failed" | tee -a "$OUT/suite.log"
  status=1
else
  echo "guest: npm run setup took $(( ($(date +%s%N) - t0) / 1000000 )) ms" | tee -a "$OUT/timing.log" "$OUT/suite.log"
  echo "guest: running scripts/vm/in-vm-test.sh ${args[*]}" | tee -a "$OUT/suite.log"
  bash scripts/vm/in-vm-test.sh "${args[@]}" 2>&1 | tee -a "$OUT/suite.log"
  status=${PIPESTATUS[0]}
fi
# The move's source half (v2, v1), when the host asks for it: a separate step with its own result.
[ -s "$OUT/move-source" ] && bash scripts/vm/move-source.sh "$OUT"
journalctl -u agentd --no-pager -o short-monotonic >"$OUT/agentd-journal.log" 2>&1
tail -n 1 "$OUT/suite.log" >"$OUT/result.tmp"
dmesg >"$OUT/dmesg.log" 2>&1
# Written last and renamed into place, so the host never reads half a result.
sync
mv "$OUT/result.tmp" "$OUT/result"
sync
exit "$status"
