#!/usr/bin/env bash
# install-criu.sh [--offline] [--selftest-program PATH]
# install-criu.sh --compile-selftest OUT
#
# Makes sure this host has a CRIU that works here, and records why it believes so. A CRIU is
# accepted only after a functional self-test (below): `criu check` alone is not enough, since CRIU
# 4.1.1 passes it on Linux 6.18 and still cannot dump a process holding an inet socket. Candidates,
# in this order, the first that passes wins:
#   1. a CRIU already installed (first on PATH, /usr/local/sbin/criu, /usr/sbin/criu);
#   2. the distribution's package (installed for the test, removed again if it fails);
#   3. the newest CRIU whose source Debian's archive has: sid's, then trixie's Sources index, read
#      through a private apt configuration (the system's apt sources are never changed); version,
#      directory and sha256 come from the index. The upstream tarball is built against this
#      system's libraries and installed as /usr/local/sbin/criu (ahead of /usr/sbin on PATH).
# The reason each refused candidate was refused is printed ("CRIU 4.1.1 fails the self-test: dump
# failed: sockets: Can't get 1:16 opt: Operation not supported").
#
# The self-test (docs/criu-selection.md): fixtures/criu/selftest.c, compiled here, runs detached in
# a session of its own holding a TCP listener on 127.0.0.1 with an established connection to it, a
# unix socket pair, a pipe, an epoll instance watching an eventfd, 4 MiB of patterned memory and a
# file it appends to. The candidate dumps it (--tcp-established) and restores it; the restored
# process must go on appending and report that every descriptor and the memory still work.
#
# The verdict goes to /var/lib/agentd/criu-selftest.json (path, version, sha256 of the binary,
# kernel release, pass or fail, reason, when, how long); agentd shows it in `agentctl host`. A run
# that finds a passing verdict for the same binary (same sha256) on the same kernel only says so
# and exits: well under a second.
#
#   --offline                 only the CRIUs already installed: no apt-get, no download, no build
#                             (the test:vm guests, which have no network). Fails, with every
#                             reason, when none passes.
#   --selftest-program PATH   a self-test program compiled elsewhere (a machine with no compiler);
#                             default: compile fixtures/criu/selftest.c with cc.
#   --compile-selftest OUT    only compile the self-test program, statically linked, to OUT, and
#                             exit (scripts/vm/vagrant.sh does it on the host for the compiler-less guests).
#
# Every criu this script runs gets CRIU_FAULT=130 in its environment: on hypervisors where x86
# hardware breakpoints never fire, CRIU otherwise waits forever at the end of a dump (see
# src/criu/run.ts). The test process is killed and its temporary directory removed however the
# script ends (trap).
set -euo pipefail

HERE=$(cd "$(dirname "$0")" && pwd)
REPO=$(cd "$HERE/.." && pwd)
SOURCE_SUITES=(sid trixie)
KEYRING=/usr/share/keyrings/debian-archive-keyring.gpg
TARGET=/usr/local/sbin/criu
WORK=/var/tmp/agentd-criu-build
RECORD=${AGENTD_CRIU_SELFTEST_RECORD:-/var/lib/agentd/criu-selftest.json}
SELFTEST_SOURCE=$REPO/fixtures/criu/selftest.c
# protobuf-compiler: CRIU 4.2's build runs protoc too (4.1.1's needed only protoc-c).
BUILD_DEPS=(build-essential pkgconf libbsd-dev libcap-dev libgnutls28-dev libnet1-dev libnftables-dev
  libnl-3-dev libprotobuf-c-dev libprotobuf-dev protobuf-c-compiler protobuf-compiler uuid-dev)
# How long one criu dump or restore of the self-test may take (measured: well under a second).
CRIU_TIMEOUT_S=60
# How long the self-test process may take to report a state (measured: a few tens of ms).
WAIT_S=10

export DEBIAN_FRONTEND=noninteractive
# root's usual PATH, so that /usr/local/sbin is searched first even from a minimal environment.
export PATH="/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin${PATH:+:$PATH}"

OFFLINE=no
SELFTEST_PROGRAM=
COMPILE_ONLY=
while [ "$#" -gt 0 ]; do
  case $1 in
    --offline) OFFLINE=yes ;;
    --selftest-program) SELFTEST_PROGRAM=${2:?--selftest-program needs a path}; shift ;;
    --selftest-program=*) SELFTEST_PROGRAM=${1#*=} ;;
    --compile-selftest) COMPILE_ONLY=${2:?--compile-selftest needs an output path}; shift ;;
    -h | --help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) echo "install-criu: unknown argument $1 (see --help)" >&2; exit 2 ;;
  esac
  shift
done

say() { echo "install-criu: $*"; }
die() {
  echo "install-criu: FAILED: $*" >&2
  exit 1
}

KERNEL=$(uname -r)

# The version a criu binary reports ("4.2.1"), or nothing.
criu_version() {
  CRIU_FAULT=130 "$1" --version 2>/dev/null | sed -n 's/^Version: *//p' | head -n 1
}

sha256_of() { sha256sum "$1" | cut -d' ' -f1; }

# --- the record ---------------------------------------------------------------------------------
# One field a line, written by us only, so that sed can read it back without a JSON parser.
json_string() {
  local s=$1
  s=${s//\\/\\\\}
  s=${s//\"/\\\"}
  s=$(printf '%s' "$s" | tr '\n\t\r' '   ' | tr -d '\000-\037')
  printf '"%s"' "$s"
}

# write_record PATH VERSION SHA256 RESULT REASON DURATION_MS
write_record() {
  local tmp
  mkdir -p "$(dirname "$RECORD")"
  tmp=$(mktemp "$RECORD.XXXXXX")
  {
    echo '{'
    echo "  \"path\": $(json_string "$1"),"
    echo "  \"version\": $(json_string "$2"),"
    echo "  \"sha256\": $(json_string "$3"),"
    echo "  \"kernel\": $(json_string "$KERNEL"),"
    echo "  \"result\": $(json_string "$4"),"
    echo "  \"reason\": $(json_string "$5"),"
    echo "  \"testedAt\": $(json_string "$(date -u +%Y-%m-%dT%H:%M:%SZ)"),"
    echo "  \"durationMs\": $6"
    echo '}'
  } >"$tmp"
  chmod 0644 "$tmp"
  mv -f "$tmp" "$RECORD"
}

# record_field NAME: a string field of the record, or nothing.
record_field() {
  [ -f "$RECORD" ] || return 0
  sed -n "s/^  \"$1\": \"\(.*\)\",\{0,1\}\$/\1/p" "$RECORD" | head -n 1
}

# The criu agentd would run: the first on PATH (which starts with /usr/local/sbin), as
# src/criu/find.ts looks for it.
criu_in_use() { command -v criu 2>/dev/null || true; }

# Fast path: the record says the CRIU in use passed on this kernel, and it is still that binary.
recorded_pass() {
  local bin
  bin=$(criu_in_use)
  [ -n "$bin" ] && [ -x "$bin" ] || return 1
  [ "$(record_field result)" = pass ] && [ "$(record_field path)" = "$bin" ] &&
    [ "$(record_field kernel)" = "$KERNEL" ] && [ "$(record_field sha256)" = "$(sha256_of "$bin")" ] || return 1
  say "CRIU $(record_field version) at $bin passed the self-test on kernel $KERNEL at $(record_field testedAt) (recorded in $RECORD): nothing to do"
}

# --- the self-test ------------------------------------------------------------------------------
TEST_DIR=
TEST_PID=
HOLDER=
PROGRAM=

# The self-test process, if it (or its restored self) is still there and not a zombie: the pid
# alone could have been reused, so the command line must be ours too.
ours_alive() {
  [ -n "$TEST_PID" ] && [ -d "/proc/$TEST_PID" ] || return 1
  [ "$(cut -d' ' -f3 "/proc/$TEST_PID/stat" 2>/dev/null)" != Z ] || return 1
  tr '\0' ' ' <"/proc/$TEST_PID/cmdline" 2>/dev/null | grep -q "criu-selftest"
}

stop_test_process() {
  local i
  if ours_alive; then
    kill -KILL "$TEST_PID" 2>/dev/null || true
    for i in $(seq 1 250); do
      ours_alive || break
      sleep 0.02
    done
  fi
  TEST_PID=
  if [ -n "$HOLDER" ]; then
    kill -KILL "$HOLDER" 2>/dev/null || true
    wait "$HOLDER" 2>/dev/null || true
    HOLDER=
  fi
}

cleanup() {
  stop_test_process
  [ -n "$TEST_DIR" ] && rm -rf "$TEST_DIR"
  TEST_DIR=
}
trap cleanup EXIT
trap 'exit 130' INT TERM HUP

# The program, compiled once per run into a temporary directory (or the one given).
prepare_program() {
  [ -n "$PROGRAM" ] && return 0
  if [ -n "$SELFTEST_PROGRAM" ]; then
    [ -x "$SELFTEST_PROGRAM" ] || die "the self-test program $SELFTEST_PROGRAM is not an executable file"
    PROGRAM=$SELFTEST_PROGRAM
    return 0
  fi
  command -v cc >/dev/null ||
    die "no C compiler (cc) to build the CRIU self-test: apt-get install build-essential, or pass --selftest-program"
  local out
  PROGRAM=$PROGRAM_DIR/criu-selftest
  out=$(cc -O2 -Wall -Wextra -Werror -o "$PROGRAM" "$SELFTEST_SOURCE" 2>&1) ||
    die "compiling $SELFTEST_SOURCE failed: $out"
}

# The first error CRIU logged, without its timestamp and source location:
# "(00.012345) Error (criu/sockets.c:628): sockets: Can't get 1:16 opt: ..." -> "sockets: Can't get 1:16 opt: ...".
first_error() {
  grep -E '\bError \(' "$1" 2>/dev/null | grep -v "RLIMIT_NOFILE" | head -n 1 |
    sed -E 's/^\([0-9.]+\)[[:space:]]*([0-9]+: )?Error \([^)]*\): *//'
}

# Waits until the output file has a line matching $1, or a FAIL line, or the process is gone.
# Returns 0 on the match; otherwise sets WHY.
await_line() {
  local pattern=$1 i
  for i in $(seq 1 $((WAIT_S * 50))); do
    if grep -q '^FAIL' "$TEST_DIR/out" 2>/dev/null; then
      WHY=$(grep -m 1 '^FAIL' "$TEST_DIR/out")
      return 1
    fi
    grep -qE "$pattern" "$TEST_DIR/out" 2>/dev/null && return 0
    if ! ours_alive; then
      WHY="the process exited (last line: $(tail -n 1 "$TEST_DIR/out" 2>/dev/null))"
      return 1
    fi
    sleep 0.02
  done
  WHY="no \"$pattern\" within $WAIT_S s (last line: $(tail -n 1 "$TEST_DIR/out" 2>/dev/null))"
  return 1
}

# run_criu BIN ARGS...: one criu run, bounded in time, with CRIU_FAULT=130 (output in criu.out).
run_criu() {
  local bin=$1
  shift
  CRIU_FAULT=130 timeout --kill-after=5 "$CRIU_TIMEOUT_S" "$bin" "$@" </dev/null >>"$TEST_DIR/criu.out" 2>&1
}

# self_test BIN: 0 if BIN dumps and restores the self-test program; else 1 with WHY set.
self_test() {
  local bin=$1 out status before after
  WHY=
  if ! out=$(CRIU_FAULT=130 timeout 60 "$bin" check 2>&1); then
    WHY="criu check fails: $(grep -E 'Error|fail' <<<"$out" | grep -v 'exited, status' | head -n 2 | tr '\n' ' ')"
    return 1
  fi
  prepare_program
  TEST_DIR=$(mktemp -d /tmp/agentd-criu-selftest.XXXXXX)
  mkdir "$TEST_DIR/images"
  # Detached: stdio from and to /dev/null, our lock descriptor closed; it makes itself a session
  # leader. A subshell of ours (HOLDER) is its parent and reaps it when the dump kills it, so that
  # its pid is free for the restore and bash has no killed job of its own to report.
  ( "$PROGRAM" "$TEST_DIR/out" </dev/null >/dev/null 2>&1 &
    echo $! >"$TEST_DIR/pid"
    wait $! ) </dev/null >/dev/null 2>&1 9>&- &
  HOLDER=$!
  for _ in $(seq 1 $((WAIT_S * 50))); do
    [ -s "$TEST_DIR/pid" ] && break
    sleep 0.02
  done
  TEST_PID=$(cat "$TEST_DIR/pid" 2>/dev/null || true)
  if [ -z "$TEST_PID" ] || ! await_line '^ready '; then
    WHY="the self-test program did not start: ${WHY:-no pid}"
    return 1
  fi
  if ! run_criu "$bin" dump -t "$TEST_PID" -D "$TEST_DIR/images" -o dump.log -v4 --tcp-established --network-lock nftables; then
    WHY="dump failed: $(first_error "$TEST_DIR/images/dump.log")"
    [ "$WHY" = "dump failed: " ] && WHY="dump failed: $(tail -n 2 "$TEST_DIR/criu.out" "$TEST_DIR/images/dump.log" 2>/dev/null | tr '\n' ' ')"
    return 1
  fi
  # The dump killed it, and HOLDER reaped it: its pid is free for the restore.
  wait "$HOLDER" 2>/dev/null || true
  HOLDER=
  if [ -d "/proc/$TEST_PID" ]; then
    WHY="the dumped process $TEST_PID is still running after criu dump"
    return 1
  fi
  before=$(grep -c '^tick ' "$TEST_DIR/out" || true)
  if ! run_criu "$bin" restore -D "$TEST_DIR/images" -o restore.log -v4 --tcp-established --network-lock nftables \
    --restore-detached --pidfile "$TEST_DIR/restored.pid"; then
    WHY="restore failed: $(first_error "$TEST_DIR/images/restore.log")"
    [ "$WHY" = "restore failed: " ] && WHY="restore failed: $(tail -n 2 "$TEST_DIR/criu.out" "$TEST_DIR/images/restore.log" 2>/dev/null | tr '\n' ' ')"
    return 1
  fi
  status=$(cat "$TEST_DIR/restored.pid" 2>/dev/null || true)
  if [ "$status" != "$TEST_PID" ]; then
    WHY="restore reported pid ${status:-none}, the dumped process was $TEST_PID"
    TEST_PID=${status:-$TEST_PID}
    return 1
  fi
  # After the restore: it must have gone on appending, and a round of checks must pass.
  kill -USR1 "$TEST_PID" 2>/dev/null || true
  if ! await_line '^round 1 ok$'; then
    WHY="after restore: $WHY"
    return 1
  fi
  after=$(grep -c '^tick ' "$TEST_DIR/out" || true)
  if ! await_line "^tick $((before + 2))\$"; then
    WHY="after restore: it does not go on appending ($after ticks, $before before the dump): $WHY"
    return 1
  fi
  stop_test_process
  rm -rf "$TEST_DIR"
  TEST_DIR=
}

# try_candidate BIN: runs the self-test on BIN and prints the verdict. Refusals are kept in
# REFUSED (one a line) for the final message, and the result of the CRIU in use is recorded.
REFUSED=
REFUSED_VERSIONS=
try_candidate() {
  local bin=$1 version sha started ms
  version=$(criu_version "$bin")
  sha=$(sha256_of "$bin")
  started=$(date +%s%N)
  if self_test "$bin"; then
    ms=$((($(date +%s%N) - started) / 1000000))
    GOOD_VERSION=$version
    say "CRIU ${version:-?} at $bin passes the self-test (dump and restore, $ms ms)"
    LAST_PASS=("$bin" "$version" "$sha" "$ms")
    return 0
  fi
  ms=$((($(date +%s%N) - started) / 1000000))
  cleanup
  say "CRIU ${version:-?} at $bin fails the self-test: $WHY"
  REFUSED+="  CRIU ${version:-?} at $bin: $WHY"$'\n'
  REFUSED_VERSIONS+=" $version"
  # Record a refusal of the CRIU agentd would run, so that `agentctl host` can say why.
  [ "$bin" = "$(criu_in_use)" ] && write_record "$bin" "$version" "$sha" fail "CRIU ${version:-?} fails the self-test: $WHY" "$ms"
  return 1
}

# The accepted CRIU must also be the one agentd finds first: move aside a broken one of ours that
# would shadow it (a copy is kept in $WORK/replaced/).
put_first() {
  local bin=$1 first
  first=$(criu_in_use)
  if [ "$first" != "$bin" ] && [ "$first" = "$TARGET" ]; then
    mkdir -p "$WORK/replaced"
    mv -f "$TARGET" "$WORK/replaced/criu.$(date +%Y%m%d%H%M%S)"
    hash -r
    say "moved the refused $TARGET to $WORK/replaced/ so that $bin comes first on PATH"
  fi
  first=$(criu_in_use)
  [ "$first" = "$bin" ] || say "warning: $first comes before $bin on PATH; agentd may pick it (give it --criu $bin)"
}

accept() {
  put_first "$1"
  write_record "$1" "${LAST_PASS[1]}" "${LAST_PASS[2]}" pass "" "${LAST_PASS[3]}"
  say "done: CRIU ${LAST_PASS[1]} at $1 passed the self-test on kernel $KERNEL (recorded in $RECORD)"
  exit 0
}

# --- 1. installed -------------------------------------------------------------------------------
try_installed() {
  local bin seen=
  for bin in "$(criu_in_use)" "$TARGET" /usr/sbin/criu; do
    [ -n "$bin" ] && [ -x "$bin" ] || continue
    case " $seen " in *" $bin "*) continue ;; esac
    seen="$seen $bin"
    if try_candidate "$bin"; then
      accept "$bin"
    fi
  done
  return 1
}

APT_UPDATED=
apt_update_once() {
  [ -n "$APT_UPDATED" ] && return 0
  say "apt-get update (system sources)"
  apt-get update -qq || die "apt-get update failed: check the network and /etc/apt/sources.list.d"
  APT_UPDATED=1
}

# --- 2. the distribution's package --------------------------------------------------------------
try_distribution_package() {
  if dpkg-query -W -f='${Status}' criu 2>/dev/null | grep -q 'install ok installed'; then
    return 1 # already tried as an installed CRIU
  fi
  apt_update_once
  if ! apt-cache show criu >/dev/null 2>&1; then
    say "the distribution has no criu package"
    return 1
  fi
  say "trying the distribution's package: apt-get install -y --no-install-recommends criu"
  if ! apt-get install -y -qq --no-install-recommends criu >"$WORK/apt-install-criu.log" 2>&1; then
    say "apt-get install criu failed (see $WORK/apt-install-criu.log)"
    return 1
  fi
  hash -r
  try_candidate /usr/sbin/criu && accept /usr/sbin/criu
  # It does not work on this kernel: take it away again so that no broken criu is left on PATH.
  say "removing the distribution's criu package again (it fails on kernel $KERNEL)"
  apt-get remove -y -qq criu >>"$WORK/apt-install-criu.log" 2>&1 ||
    say "warning: could not remove the criu package; /usr/local/sbin/criu will still come first on PATH"
  hash -r
  return 1
}

# --- 3. built from Debian's source --------------------------------------------------------------
# The archive URI of the system's Debian source for suite $1 (e.g. http://deb.debian.org/debian).
system_archive_uri() {
  local suite=$1 f uri
  if [ -f /etc/apt/sources.list.d/debian.sources ]; then
    # deb822: stanzas separated by blank lines; take URIs from the stanza whose Suites list $suite.
    uri=$(awk -v suite="$suite" '
      function flush() { if (!done && has && uris != "") { split(uris, u, " "); print u[1]; done = 1 } has = 0; uris = "" }
      done { exit }
      /^[[:space:]]*$/ { flush(); next }
      /^URIs:/ { sub(/^URIs:[[:space:]]*/, ""); uris = $0 }
      /^Suites:/ { n = split($0, s, /[[:space:]]+/); for (i = 2; i <= n; i++) if (s[i] == suite) has = 1 }
      END { flush() }' /etc/apt/sources.list.d/debian.sources)
    [ -n "$uri" ] && { echo "$uri"; return 0; }
  fi
  for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list; do
    [ -f "$f" ] || continue
    # "deb [options] URI SUITE COMPONENTS..."
    uri=$(awk -v suite="$suite" '
      $1 == "deb" || $1 == "deb-src" {
        i = 2
        if ($i ~ /^\[/) { while ($i !~ /\]$/) i++; i++ }
        if ($(i + 1) == suite) { print $i; exit }
      }' "$f")
    [ -n "$uri" ] && { echo "$uri"; return 0; }
  done
  return 1
}

ARCHIVE_URI=
archive_uri() {
  [ -n "$ARCHIVE_URI" ] && return 0
  local codename
  codename=$(. /etc/os-release && echo "${VERSION_CODENAME:-bookworm}")
  ARCHIVE_URI=$(system_archive_uri "$codename") ||
    die "no Debian '$codename' source found in /etc/apt/sources.list.d/debian.sources or /etc/apt/sources.list; cannot tell which archive to fetch CRIU's source from"
  ARCHIVE_URI=${ARCHIVE_URI%/}
  [ -f "$KEYRING" ] || die "$KEYRING is missing: apt-get install debian-archive-keyring"
}

# source_of SUITE: reads SUITE's Sources index through a private apt configuration and sets
# SRC_VERSION (the upstream version, "4.2.1"), SRC_TARBALL, SRC_DIRECTORY and SRC_SHA256 for the
# newest criu source package there. Returns 1 (saying why) when there is none.
source_of() {
  local suite=$1 aptdir out
  local -a apt_opts
  archive_uri
  aptdir=$WORK/apt-$suite
  rm -rf "$aptdir"
  mkdir -p "$aptdir/lists/partial" "$aptdir/cache/archives/partial"
  echo "deb-src [signed-by=$KEYRING] $ARCHIVE_URI $suite main" >"$aptdir/sources.list"
  apt_opts=(-o "Dir::Etc::sourcelist=$aptdir/sources.list" -o Dir::Etc::sourceparts=-
    -o "Dir::State::Lists=$aptdir/lists" -o "Dir::Cache=$aptdir/cache")
  say "reading Debian $suite's Sources index from $ARCHIVE_URI (private apt configuration in $aptdir)"
  if ! apt-get "${apt_opts[@]}" update -qq >"$WORK/apt-update-$suite.log" 2>&1; then
    say "apt-get update of $suite's Sources failed (see $WORK/apt-update-$suite.log)"
    return 1
  fi
  if ! out=$(apt-cache "${apt_opts[@]}" showsrc criu 2>/dev/null) || [ -z "$out" ]; then
    say "Debian $suite has no criu source package"
    return 1
  fi
  # Of every record (fields in any order, so decide at its end), the one with the highest Version;
  # its orig tarball's name, the Directory and the tarball's sha256.
  read -r SRC_DEBVERSION SRC_DIRECTORY SRC_TARBALL SRC_SHA256 < <(awk '
    function flush() { if (sha != "") print version, directory, tarball, sha; version = directory = tarball = sha = ""; insha = 0 }
    /^[[:space:]]*$/ { flush(); next }
    /^Version:/ { version = $2 }
    /^Directory:/ { directory = $2 }
    /^[^[:space:]]+:/ { insha = ($1 == "Checksums-Sha256:"); next }
    insha && $3 ~ /\.orig\.tar\.(xz|gz|bz2)$/ { sha = $1; tarball = $3 }
    END { flush() }' <<<"$out" | sort -V -k1,1 | tail -n 1) || true
  if [ -z "${SRC_SHA256:-}" ]; then
    say "no orig tarball in Debian $suite's criu source records"
    return 1
  fi
  SRC_VERSION=${SRC_TARBALL#criu_}
  SRC_VERSION=${SRC_VERSION%.orig.tar.*}
  say "Debian $suite has criu $SRC_DEBVERSION ($SRC_TARBALL in $SRC_DIRECTORY, sha256 $SRC_SHA256)"
}

# Fetches SRC_TARBALL into $WORK and checks it against SRC_SHA256 (a copy from an earlier run is
# reused when it matches).
fetch_tarball() {
  local file=$WORK/$SRC_TARBALL
  if [ -f "$file" ] && echo "$SRC_SHA256  $file" | sha256sum --check --status; then
    say "using $file from an earlier run (sha256 verified)"
    return 0
  fi
  say "downloading $ARCHIVE_URI/$SRC_DIRECTORY/$SRC_TARBALL"
  rm -f "$file"
  /usr/lib/apt/apt-helper download-file "$ARCHIVE_URI/$SRC_DIRECTORY/$SRC_TARBALL" "$file" "SHA256:$SRC_SHA256" \
    >"$WORK/download.log" 2>&1 ||
    die "downloading $ARCHIVE_URI/$SRC_DIRECTORY/$SRC_TARBALL failed (see $WORK/download.log)"
  echo "$SRC_SHA256  $file" | sha256sum --check --status || die "$file does not have sha256 $SRC_SHA256"
  say "sha256 of $SRC_TARBALL verified"
}

# The build dependencies, from the system's own suite.
install_build_deps() {
  local missing=() pkg
  for pkg in "${BUILD_DEPS[@]}"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q 'install ok installed' || missing+=("$pkg")
  done
  if [ "${#missing[@]}" -eq 0 ]; then
    say "build dependencies already installed"
    return 0
  fi
  apt_update_once
  say "installing build dependencies: ${missing[*]}"
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >"$WORK/apt-build-deps.log" 2>&1 ||
    die "installing the build dependencies failed (see $WORK/apt-build-deps.log); install them by hand: apt-get install --no-install-recommends ${BUILD_DEPS[*]}"
}

# Builds SRC_TARBALL; sets BUILT to the binary in the build tree. Returns 1 (saying why) on failure.
build_criu() {
  local tree=$WORK/criu-$SRC_VERSION started
  rm -rf "$tree"
  say "unpacking $SRC_TARBALL"
  tar -xf "$WORK/$SRC_TARBALL" -C "$WORK" || die "unpacking $WORK/$SRC_TARBALL failed"
  [ -d "$tree" ] || die "$SRC_TARBALL did not unpack to $tree"
  started=$SECONDS
  say "building CRIU $SRC_VERSION: make -j$(nproc) criu (about 40 s on 2 cores; log in $WORK/build-$SRC_VERSION.log)"
  if ! make -C "$tree" -j"$(nproc)" criu >"$WORK/build-$SRC_VERSION.log" 2>&1; then
    tail -n 20 "$WORK/build-$SRC_VERSION.log" >&2
    say "make criu of $SRC_VERSION failed (full log: $WORK/build-$SRC_VERSION.log); are all of these installed? ${BUILD_DEPS[*]}"
    return 1
  fi
  say "built CRIU $SRC_VERSION in $((SECONDS - started)) s"
  BUILT=$tree/criu/criu
  [ -x "$BUILT" ] || { say "the build did not produce $BUILT"; return 1; }
}

install_built() {
  if [ -e "$TARGET" ]; then
    # Something that failed was there (a good one would have ended the script early): keep a copy.
    mkdir -p "$WORK/replaced"
    cp -p "$TARGET" "$WORK/replaced/criu.$(date +%Y%m%d%H%M%S)"
    say "kept a copy of the previous $TARGET in $WORK/replaced/"
  fi
  install -D -m 0755 "$BUILT" "$TARGET.new" && mv -f "$TARGET.new" "$TARGET" || die "installing $TARGET failed"
  hash -r
  rm -rf "$WORK/criu-$SRC_VERSION"
  say "installed $TARGET"
}

try_debian_source() {
  local suite tried=
  for suite in "${SOURCE_SUITES[@]}"; do
    source_of "$suite" || continue
    case " $tried $REFUSED_VERSIONS " in *" $SRC_VERSION "*)
      say "CRIU $SRC_VERSION was refused already: not building it"
      continue ;;
    esac
    tried="$tried $SRC_VERSION"
    fetch_tarball
    install_build_deps
    build_criu || continue
    if try_candidate "$BUILT"; then
      install_built
      # The installed copy is the same binary (same sha256) as the one that passed.
      LAST_PASS[2]=$(sha256_of "$TARGET")
      accept "$TARGET"
    fi
    rm -rf "$WORK/criu-$SRC_VERSION"
  done
  return 1
}

# --compile-selftest: static, so that it runs on a guest whatever its libc.
compile_only() {
  local out
  command -v cc >/dev/null || die "no C compiler (cc) to build the CRIU self-test: apt-get install build-essential"
  mkdir -p "$(dirname "$COMPILE_ONLY")"
  out=$(cc -static -O2 -Wall -Wextra -Werror -o "$COMPILE_ONLY.tmp" "$SELFTEST_SOURCE" 2>&1) ||
    die "compiling $SELFTEST_SOURCE failed: $out"
  mv -f "$COMPILE_ONLY.tmp" "$COMPILE_ONLY"
  say "compiled the CRIU self-test program to $COMPILE_ONLY"
}

main() {
  if [ -n "$COMPILE_ONLY" ]; then
    compile_only
    exit 0
  fi
  [ "$(id -u)" = 0 ] || die "must run as root (it installs packages and /usr/local/sbin/criu, and runs CRIU)"
  recorded_pass && exit 0

  mkdir -p "$WORK"
  # One run at a time (npm run setup from two shells): the second waits, then finds the first's verdict.
  exec 9>"$WORK/.lock"
  flock 9
  recorded_pass && exit 0
  PROGRAM_DIR=$(mktemp -d /tmp/agentd-criu-selftest-program.XXXXXX)
  trap 'cleanup; rm -rf "$PROGRAM_DIR"' EXIT

  try_installed || true
  if [ "$OFFLINE" = yes ]; then
    die "no installed CRIU passes the self-test on kernel $KERNEL (offline: nothing else is tried):"$'\n'"${REFUSED:-  no criu installed}"
  fi
  try_distribution_package || true
  try_debian_source || true
  die "no CRIU passes the self-test on kernel $KERNEL:"$'\n'"${REFUSED:-  none could be tried}"
}

main "$@"
