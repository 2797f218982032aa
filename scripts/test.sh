#!/usr/bin/env bash
# The whole suite on this host's real kernel: builds, then runs every test file under dist/test with
# node's test runner, one file at a time (tests freeze real cgroups; running them side by side on a
# 2-core machine would make each other's timing noisy). Pass file or folder names to run a subset.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "$(id -u)" != 0 ]; then
  echo "npm test: the suite drives real cgroups and CRIU and must run as root" >&2
  exit 2
fi
npm run --silent build
if [ "$#" -gt 0 ]; then
  targets=("$@")
else
  targets=(dist/test)
fi
exec node --test --test-concurrency=1 --test-timeout=600000 --test-reporter=spec "${targets[@]}"
