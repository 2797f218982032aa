#!/usr/bin/env bash
# guest-main.sh REPO OUT: what a test:vm guest runs once booted (called by the image's
# /usr/local/sbin/agentd-vm-test with the repository share mounted read-only at REPO and the output
# share at OUT). Reads what the host asked for from OUT (expect: the cgroup mode this boot must be
# in; targets: test paths, one a line, optional), runs scripts/vm/in-vm-test.sh, and leaves in OUT
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
cd "$REPO" || exit 1

args=()
[ -s "$OUT/expect" ] && args+=(--expect "$(cat "$OUT/expect")")
if [ -s "$OUT/targets" ]; then
  while IFS= read -r t; do [ -n "$t" ] && args+=("$t"); done <"$OUT/targets"
fi

echo "guest: up $(cut -d' ' -f1 /proc/uptime) s after boot; running scripts/vm/in-vm-test.sh ${args[*]}" | tee "$OUT/suite.log"
bash scripts/vm/in-vm-test.sh "${args[@]}" 2>&1 | tee -a "$OUT/suite.log"
status=${PIPESTATUS[0]}
tail -n 1 "$OUT/suite.log" >"$OUT/result.tmp"
dmesg >"$OUT/dmesg.log" 2>&1
# Written last and renamed into place, so the host never reads half a result.
sync
mv "$OUT/result.tmp" "$OUT/result"
sync
exit "$status"
