# results.sh: sourced by vagrant-inside.sh (test:vm), which ends with one result line per machine
# and a total, and the move's verdict.
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

# move_summary LABEL DIR HINT MACHINE...: the move between machines (scripts/vm/move-source.sh,
# test/move/): one line per source half among MACHINE... (v2, v1), what the target half wrote
# (DIR/v2b/move-result), then the verdict. HINT is where to look when a source half left no result,
# with MACHINE in it standing for the machine's name. Returns non-zero if v2 to v2b did not pass.
move_summary() {
  local label=$1 dir=$2 hint=$3 m f
  shift 3
  f=$dir/v2b/move-result
  for m in v2 v1; do
    [[ " $* " == *" $m "* ]] || continue
    if [ -s "$dir/$m/move-source-result" ]; then
      echo "$label: move source $m: $(cat "$dir/$m/move-source-result") (log: $dir/$m/move-source.log)"
    else
      echo "$label: move source $m: no result (see ${hint//MACHINE/$m})"
    fi
  done
  if [ -s "$f" ]; then sed "s/^/$label: move: /" "$f"; fi
  if [ -s "$f" ] && grep -qx 'v2->v2b: passed' "$f"; then
    echo "$label: move v2->v2b: passed"
  else
    echo "$label: move v2->v2b: FAILED (see $dir/v2b/suite.log)"
    return 1
  fi
}
