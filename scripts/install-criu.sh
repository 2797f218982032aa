#!/usr/bin/env bash
# Makes sure this host has a CRIU that passes `criu check`, in this order:
#   1. one already installed (on PATH, or /usr/local/sbin/criu) with version >= 4: keep it;
#   2. the distribution's package, if its `criu check` passes on this kernel;
#   3. CRIU 4.1.1 built from the upstream tarball that Debian trixie's source package ships,
#      installed as /usr/local/sbin/criu (ahead of /usr/sbin on root's PATH).
# Idempotent: once a good CRIU is there, a run only checks it and exits (well under a second).
#
# Why the build: kernels from about 6.13 map a `[vvar_vclock]` area that CRIU 3.x does not know,
# so Debian 12's criu 3.17.1 fails `criu check` with "vdso: Unexpected rt vDSO area bounds";
# trixie's criu 4.1.1 binary needs glibc 2.38 and Debian 12 has 2.36. Building 4.1.1 against
# Debian 12's libraries works and uses nothing but Debian's archive. See docs/criu-selection.md
# for the measurements and docs/criu.md for how agentd runs it.
#
# The system's apt sources are never changed: trixie's Sources index is read through a private apt
# configuration under $WORK.
set -euo pipefail

CRIU_VERSION=4.1.1
CRIU_TARBALL="criu_${CRIU_VERSION}.orig.tar.xz"
CRIU_SHA256=f80a66cb3726bb2116266d4759ce3bcbfab7abdb6b6d430bf20dd41911717afe
SOURCE_SUITE=trixie
KEYRING=/usr/share/keyrings/debian-archive-keyring.gpg
TARGET=/usr/local/sbin/criu
WORK=/var/tmp/agentd-criu-build
BUILD_DEPS=(build-essential pkgconf libbsd-dev libcap-dev libgnutls28-dev libnet1-dev libnftables-dev
  libnl-3-dev libprotobuf-c-dev libprotobuf-dev protobuf-c-compiler uuid-dev)

export DEBIAN_FRONTEND=noninteractive
# root's usual PATH, so that /usr/local/sbin is searched first even from a minimal environment.
export PATH="/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin${PATH:+:$PATH}"

say() { echo "install-criu: $*"; }
die() {
  echo "install-criu: FAILED: $*" >&2
  exit 1
}

# The version a criu binary reports ("4.1.1"), or nothing.
criu_version() {
  "$1" --version 2>/dev/null | sed -n 's/^Version: *//p' | head -n 1
}

# Succeeds when $1 is an executable CRIU whose major version is >= $3 (default 4) and whose
# `criu check` passes. Sets GOOD_VERSION. Says why not when $2 is "verbose".
criu_usable() {
  local bin=$1 verbose=${2:-} min_major=${3:-4} version major out
  GOOD_VERSION=
  [ -x "$bin" ] || return 1
  version=$(criu_version "$bin")
  major=${version%%.*}
  if ! [[ "$major" =~ ^[0-9]+$ ]] || [ "$major" -lt "$min_major" ]; then
    [ "$verbose" = verbose ] && say "$bin is version ${version:-unknown}, we need >= $min_major"
    return 1
  fi
  if ! out=$("$bin" check 2>&1); then
    [ "$verbose" = verbose ] && say "$bin ($version) fails \`criu check\`: $(grep -E 'Error|fail' <<<"$out" | grep -v 'exited, status' | head -n 2 | tr '\n' ' ')"
    return 1
  fi
  GOOD_VERSION=$version
}

# Succeeds, printing what it found, when a good CRIU is already installed.
find_good_criu() {
  local candidates=() bin seen=
  bin=$(command -v criu 2>/dev/null || true)
  [ -n "$bin" ] && candidates+=("$bin")
  candidates+=("$TARGET")
  for bin in "${candidates[@]}"; do
    case " $seen " in *" $bin "*) continue ;; esac
    seen="$seen $bin"
    if criu_usable "$bin" "${1:-}"; then
      say "found CRIU $GOOD_VERSION at $bin, \`criu check\` passes: nothing to do"
      return 0
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

# Step 2: the distribution's package. Returns 0 if it is installed and passes `criu check`.
try_distribution_package() {
  local had_it=no
  if dpkg-query -W -f='${Status}' criu 2>/dev/null | grep -q 'install ok installed'; then
    had_it=yes
  fi
  if [ "$had_it" = no ]; then
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
  fi
  # The package installs /usr/sbin/criu. Any version the distribution ships is fine if it passes
  # `criu check` on this kernel (Debian 12's 3.17.1 does on its own 6.1 kernel).
  if criu_usable /usr/sbin/criu verbose 0; then
    say "the distribution's CRIU $GOOD_VERSION passes \`criu check\`: using /usr/sbin/criu"
    return 0
  fi
  if [ "$had_it" = no ]; then
    # We installed it and it does not work on this kernel: take it away again so that no broken
    # criu is left on PATH. A package that was there before we ran is left alone (ours, in
    # /usr/local/sbin, comes first on PATH anyway).
    say "removing the distribution's criu package again (it does not work on kernel $(uname -r))"
    apt-get remove -y -qq criu >>"$WORK/apt-install-criu.log" 2>&1 ||
      say "warning: could not remove the criu package; /usr/local/sbin/criu will still come first on PATH"
  fi
  return 1
}

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

# Step 3a: fetch and verify the orig tarball through a private apt configuration.
fetch_tarball() {
  local codename uri aptdir out version directory sha
  local -a apt_opts
  if [ -f "$WORK/$CRIU_TARBALL" ] && echo "$CRIU_SHA256  $WORK/$CRIU_TARBALL" | sha256sum --check --status; then
    say "using $WORK/$CRIU_TARBALL from an earlier run (sha256 verified)"
    return 0
  fi
  codename=$(. /etc/os-release && echo "${VERSION_CODENAME:-bookworm}")
  uri=$(system_archive_uri "$codename") ||
    die "no Debian '$codename' source found in /etc/apt/sources.list.d/debian.sources or /etc/apt/sources.list; cannot tell which archive to fetch $CRIU_TARBALL from"
  uri=${uri%/}
  [ -f "$KEYRING" ] || die "$KEYRING is missing: apt-get install debian-archive-keyring"

  aptdir=$WORK/apt
  rm -rf "$aptdir"
  mkdir -p "$aptdir/lists/partial" "$aptdir/cache/archives/partial"
  echo "deb-src [signed-by=$KEYRING] $uri $SOURCE_SUITE main" >"$aptdir/sources.list"
  apt_opts=(-o "Dir::Etc::sourcelist=$aptdir/sources.list" -o Dir::Etc::sourceparts=-
    -o "Dir::State::Lists=$aptdir/lists" -o "Dir::Cache=$aptdir/cache")

  say "reading Debian $SOURCE_SUITE's Sources index from $uri (private apt config in $aptdir)"
  apt-get "${apt_opts[@]}" update -qq >"$WORK/apt-update-$SOURCE_SUITE.log" 2>&1 ||
    die "apt-get update of $SOURCE_SUITE's Sources from $uri failed (see $WORK/apt-update-$SOURCE_SUITE.log)"
  out=$(apt-cache "${apt_opts[@]}" showsrc criu 2>/dev/null) ||
    die "apt-cache showsrc criu found no criu source package in $SOURCE_SUITE at $uri"

  # The record that ships our tarball: its Version, Directory and the tarball's sha256.
  # Fields of one record come in any order (Directory after the checksums), so decide at its end.
  read -r version directory sha < <(awk -v file="$CRIU_TARBALL" '
    function flush() { if (sha != "" && !done) { print version, directory, sha; done = 1 } version = directory = sha = ""; insha = 0 }
    /^[[:space:]]*$/ { flush(); next }
    /^Version:/ { version = $2 }
    /^Directory:/ { directory = $2 }
    /^[^[:space:]]+:/ { insha = ($1 == "Checksums-Sha256:"); next }
    insha && $3 == file { sha = $1 }
    END { flush() }' <<<"$out") || true
  if [ -z "${sha:-}" ]; then
    die "Debian $SOURCE_SUITE no longer ships $CRIU_TARBALL (apt-cache showsrc criu lists: $(sed -n 's/^Version: //p' <<<"$out" | tr '\n' ' ')); update CRIU_VERSION and CRIU_SHA256 in $0"
  fi
  say "Debian $SOURCE_SUITE has criu $version in $directory"
  [ "$sha" = "$CRIU_SHA256" ] ||
    die "the archive's sha256 for $CRIU_TARBALL is $sha, expected $CRIU_SHA256; refusing to build it"

  say "downloading $uri/$directory/$CRIU_TARBALL"
  rm -f "$WORK/$CRIU_TARBALL"
  /usr/lib/apt/apt-helper download-file "$uri/$directory/$CRIU_TARBALL" "$WORK/$CRIU_TARBALL" "SHA256:$CRIU_SHA256" \
    >"$WORK/download.log" 2>&1 ||
    die "downloading $uri/$directory/$CRIU_TARBALL failed (see $WORK/download.log)"
  echo "$CRIU_SHA256  $WORK/$CRIU_TARBALL" | sha256sum --check --status ||
    die "$WORK/$CRIU_TARBALL does not have sha256 $CRIU_SHA256"
  say "sha256 of $CRIU_TARBALL verified: $CRIU_SHA256"
}

# Step 3b: the build dependencies, from the system's own suite.
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

# Step 3c: build, check the built binary, install it.
build_and_install() {
  local tree=$WORK/criu-$CRIU_VERSION built out started
  rm -rf "$tree"
  say "unpacking $CRIU_TARBALL"
  tar -xJf "$WORK/$CRIU_TARBALL" -C "$WORK" || die "unpacking $WORK/$CRIU_TARBALL failed"
  [ -d "$tree" ] || die "$CRIU_TARBALL did not unpack to $tree"
  started=$SECONDS
  say "building: make -j$(nproc) criu (about a minute on 2 cores; log in $WORK/build.log)"
  if ! make -C "$tree" -j"$(nproc)" criu >"$WORK/build.log" 2>&1; then
    tail -n 20 "$WORK/build.log" >&2
    die "make criu failed (full log: $WORK/build.log); are all of these installed? ${BUILD_DEPS[*]}"
  fi
  say "built in $((SECONDS - started)) s"
  built=$tree/criu/criu
  [ -x "$built" ] || die "the build did not produce $built"
  if ! out=$("$built" check 2>&1); then
    echo "$out" >&2
    die "the freshly built CRIU $CRIU_VERSION fails \`criu check\` on kernel $(uname -r); not installing it"
  fi
  say "the built binary passes \`criu check\`"
  if [ -e "$TARGET" ]; then
    # Something broken was there (a good one would have ended the script early): keep a copy.
    mkdir -p "$WORK/replaced"
    cp -p "$TARGET" "$WORK/replaced/criu.$(date +%Y%m%d%H%M%S)"
    say "kept a copy of the previous $TARGET in $WORK/replaced/"
  fi
  install -D -m 0755 "$built" "$TARGET.new" && mv -f "$TARGET.new" "$TARGET" || die "installing $TARGET failed"
  rm -rf "$tree"
  say "installed $TARGET"
}

main() {
  if [ "$(id -u)" != 0 ]; then
    die "must run as root (it installs packages and /usr/local/sbin/criu)"
  fi
  # Fast path: a good CRIU is already there.
  find_good_criu && exit 0

  mkdir -p "$WORK"
  # One run at a time (npm run setup from two shells): the second waits, then finds the first's CRIU.
  exec 9>"$WORK/.lock"
  flock 9
  find_good_criu verbose && exit 0

  try_distribution_package && exit 0

  say "building CRIU $CRIU_VERSION from Debian $SOURCE_SUITE's upstream tarball"
  fetch_tarball
  install_build_deps
  build_and_install
  criu_usable "$TARGET" verbose || die "$TARGET was installed but does not pass \`criu check\`"
  say "done: CRIU $GOOD_VERSION at $TARGET, \`criu check\` passes"
}

main "$@"
