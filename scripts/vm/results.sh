# results.sh: sourced by run.sh (test:vm) and vagrant-inside.sh (test:vagrant), which both end with
# one result line per machine and a total.
#
# sum_results LABEL: reads lines `NAME: RESULT` on stdin, prints each, then
# `LABEL: N passed, N failed`, the sums. A RESULT that is not `N passed, N failed` (a machine that
# timed out or never reported) counts as one failure. Returns non-zero if anything failed.
sum_results() {
  local label=$1 line result total_pass=0 total_fail=0 ok=yes
  while IFS= read -r line; do
    echo "$line"
    result=${line#*: }
    if [[ "$result" =~ ^([0-9]+)\ passed,\ ([0-9]+)\ failed$ ]]; then
      total_pass=$((total_pass + BASH_REMATCH[1]))
      total_fail=$((total_fail + BASH_REMATCH[2]))
      [ "${BASH_REMATCH[2]}" = 0 ] || ok=no
    else
      total_fail=$((total_fail + 1))
      ok=no
    fi
  done
  echo "$label: $total_pass passed, $total_fail failed"
  [ "$ok" = yes ]
}
