# shellcheck shell=bash
# Shared helpers for the build-time guest artifact scripts (kernel/, images/).
# Source it from bash scripts running under `set -euo pipefail`:
#   . "$(dirname "${BASH_SOURCE[0]}")/../scripts/lib-cache.sh"
#
# Cache layout: $(cache_root)/<kind>/<key>/ is one finished entry. It is built
# in $(cache_root)/<kind>/.<key>.tmp.* and renamed into place, so an entry that
# exists is always complete; <kind>/.<key>.lock serialises builders of one key.

die() {
  printf '%s: error: %s\n' "${0##*/}" "$*" >&2
  exit 1
}

cache_root() {
  printf '%s\n' "${SANDBOX_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/torkbot-sandbox}"
}

# cache_key FILE... [-- STRING...]: sha256 over the files' names and contents
# and the extra strings (pins). Base names only, so the key does not depend on
# where the checkout lives.
cache_key() {
  local f
  {
    while (($#)) && [[ $1 != -- ]]; do
      f=$1
      shift
      [[ -f $f ]] || die "cache_key: no such recipe file: $f"
      printf 'file %s %s\n' "${f##*/}" "$(sha256sum <"$f" | cut -d' ' -f1)"
    done
    (($#)) && shift
    for f in "$@"; do printf 'pin %s\n' "$f"; done
  } | sha256sum | cut -d' ' -f1
}

# cache_build KIND KEY COMMAND [ARG...]: make sure entry KIND/KEY exists,
# running `COMMAND ARG... TMPDIR` to fill a fresh TMPDIR if it does not.
# Sets CACHE_ENTRY to the entry path.
# COMMAND runs with errexit in force: a failure exits the calling script, and
# an EXIT trap removes the temp dir (a .tmp left by a killed build is removed
# by the next builder of the key).
cache_build() {
  local kind=$1 key=$2
  shift 2
  local dir
  dir=$(cache_root)/$kind
  CACHE_ENTRY=$dir/$key
  [[ -d $CACHE_ENTRY ]] && return 0
  mkdir -p "$dir" || die "cannot create cache directory $dir (set SANDBOX_CACHE_DIR to a writable place)"
  local lock_fd
  exec {lock_fd}>"$dir/.$key.lock"
  flock "$lock_fd"
  # Another builder may have finished while we waited for the lock.
  if [[ ! -d $CACHE_ENTRY ]]; then
    # Only the lock holder builds this key, so any tmp dir of it is a
    # leftover of a crashed build. --one-file-system: a killed debootstrap
    # can leave /proc or /sys mounted inside its tree.
    rm -rf --one-file-system "$dir/.$key.tmp."*
    local saved_trap
    saved_trap=$(trap -p EXIT)
    _cache_tmp=$(mktemp -d "$dir/.$key.tmp.XXXXXX") # global: read by the trap
    trap 'rm -rf --one-file-system "$_cache_tmp"' EXIT
    chmod 0755 "$_cache_tmp" # mktemp's 0700 would become the entry's mode
    "$@" "$_cache_tmp"
    # Entry files are shared by hard links: read-only files keep an output
    # edited in place from corrupting the cache (directories stay writable
    # so that `rm -rf` of the cache still works).
    find "$_cache_tmp" -type f -exec chmod a-w {} +
    mv -T "$_cache_tmp" "$CACHE_ENTRY"
    eval "${saved_trap:-trap - EXIT}"
  fi
  exec {lock_fd}>&-
}

# link_or_copy SRC DST: hard link (instant, no space) when SRC and DST share a
# file system, else copy. DST is replaced.
link_or_copy() {
  rm -rf "$2"
  cp -al "$1" "$2" 2>/dev/null || cp -a "$1" "$2"
}

# need_pkgs PKG...: install the Debian packages that are missing (as root),
# or say exactly what to install and fail (not root).
need_pkgs() {
  local p missing=()
  for p in "$@"; do
    dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p")
  done
  ((${#missing[@]})) || return 0
  if ((EUID != 0)); then
    die "missing packages: ${missing[*]}; run as root: apt-get install -y ${missing[*]}"
  fi
  # A fresh machine may have no package lists yet: update once and retry.
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${missing[@]}" >&2 ||
    { apt-get update -q >&2 && DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${missing[@]}" >&2; } ||
    die "apt-get install ${missing[*]} failed"
}
