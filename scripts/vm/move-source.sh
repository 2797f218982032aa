#!/usr/bin/env bash
# move-source.sh OUT: the source half of test:vm's move (docs/fleet.md), run in the v2 and v1 guests
# by provision.sh's test phase after the suite, when the host asked for it (OUT/move-source names the machine).
# Runs test/move/source.test.ts through the in-VM entry point against the agent `npm run setup`
# installed: a job checkpointed and exported, the archive, the agent's key and job.json into
# OUT/move/ for the v2b boot. Leaves its output in OUT/move-source.log and its `N passed, N failed`
# in OUT/move-source-result; the suite's result is not touched.
set -uo pipefail
OUT=$1
cd "$(dirname "$0")/../.." || exit 1
machine=$(cat "$OUT/move-source")
args=()
[ -s "$OUT/expect" ] && args+=(--expect "$(cat "$OUT/expect")")
mkdir -p "$OUT/move"
t0=$(date +%s%N)
AGENTD_MOVE_OUT=$OUT/move AGENTD_MOVE_MACHINE=$machine \
  bash scripts/vm/in-vm-test.sh "${args[@]}" dist/test/move/source.test.js >"$OUT/move-source.log" 2>&1
tail -n 1 "$OUT/move-source.log" >"$OUT/move-source-result.tmp"
echo "guest: the move's source half took $(( ($(date +%s%N) - t0) / 1000000 )) ms" >>"$OUT/timing.log"
sync
mv "$OUT/move-source-result.tmp" "$OUT/move-source-result"
