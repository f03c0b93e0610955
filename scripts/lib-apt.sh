# shellcheck shell=bash
# Pinned Debian packages fetched through this machine's apt, in a way that
# survives both stale package lists and Debian's mirror dropping the pin.
# Source it after lib-cache.sh (it uses die). Honors APT_CONFIG like apt
# itself, which is how its test points it at a repository of its own.
#
# The rule, for every pinned .deb the build downloads:
#   - the pin (NAME=VERSION) is used whenever the mirror serves it, and
#     checked against its pinned sha256: builds stay reproducible;
#   - lists that do not know the pin, or a download that fails, get one
#     `apt-get update` (as root) and a second try: a fresh machine's stale
#     or missing lists are not the user's problem;
#   - a pin the mirror no longer serves (Debian drops superseded kernels at
#     every point release) is replaced by the package a metapackage of the
#     same kind depends on now (linux-image-amd64 → linux-image-6.1.0-NN-amd64),
#     said on one line, and verified through apt's signed index instead of
#     the pin: apt checks the Release file's signature (InRelease), the
#     Packages file against the Release's SHA256, and the .deb against the
#     Packages' SHA256; apt_pin_fetch checks that last hash once more itself.

# apt_pin_resolve NAME VERSION META: which package to use, from the lists as
# they are (no network, no update). Sets APT_PIN_NAME and APT_PIN_VERSION:
# NAME VERSION when the lists know the pin, else what META depends on now,
# else NAME VERSION again (the fetch will update and say what failed).
apt_pin_resolve() {
  local name=$1 version=$2 meta=$3
  APT_PIN_NAME=$name APT_PIN_VERSION=$version
  _apt_listed "$name" "$version" && return 0
  _apt_meta_target "$meta" || true
}

# apt_pin_fetch DIR NAME VERSION SHA256 META: downloads the package to use
# (see the rule above) into DIR. Sets APT_PIN_NAME, APT_PIN_VERSION and
# APT_PIN_DEB (the .deb's path); prints one line on stderr when the pin was
# not served, saying what was used instead and how it was verified.
apt_pin_fetch() {
  local dir=$1 name=$2 version=$3 sha=$4 meta=$5 updated= attempt
  for attempt in 1 2; do
    if _apt_listed "$name" "$version"; then
      if _apt_download "$dir" "$name" "$version"; then
        [[ $(sha256sum <"$APT_PIN_DEB" | cut -d' ' -f1) == "$sha" ]] ||
          die "$APT_PIN_DEB ($name=$version) does not match its pinned sha256 $sha"
        APT_PIN_NAME=$name APT_PIN_VERSION=$version
        return 0
      fi
    fi
    # Not listed, or listed but not downloadable (the lists predate a point
    # release that dropped it): refresh once, then look again.
    [[ -z $updated ]] || break
    _apt_update || break
    updated=1
  done
  _apt_meta_target "$meta" ||
    die "the mirror serves neither the pinned $name=$version nor a package $meta depends on${updated:+ (even after apt-get update)}: check this machine's apt sources (apt-cache policy $name $meta)$([[ -n $updated ]] || printf '; as root this would have run apt-get update')"
  local want_sha
  want_sha=$(_apt_field "$APT_PIN_NAME" "$APT_PIN_VERSION" SHA256)
  [[ -n $want_sha ]] || die "apt lists no SHA256 for $APT_PIN_NAME=$APT_PIN_VERSION: cannot verify it"
  _apt_download "$dir" "$APT_PIN_NAME" "$APT_PIN_VERSION" || {
    cat "$dir/apt.log" >&2
    die "apt-get download $APT_PIN_NAME=$APT_PIN_VERSION failed (the pinned $name=$version is not served either)"
  }
  [[ $(sha256sum <"$APT_PIN_DEB" | cut -d' ' -f1) == "$want_sha" ]] ||
    die "$APT_PIN_DEB does not match the SHA256 $want_sha apt's index lists for $APT_PIN_NAME=$APT_PIN_VERSION"
  printf '%s: the mirror does not serve the pinned %s=%s; using %s=%s (what %s depends on now), verified through the signed apt index (InRelease signature → Packages hash → .deb SHA256 %s). Re-pin to it for reproducible builds.\n' \
    "${0##*/}" "$name" "$version" "$APT_PIN_NAME" "$APT_PIN_VERSION" "$meta" "$want_sha" >&2
}

# _apt_listed NAME VERSION: the package lists know NAME=VERSION.
_apt_listed() {
  apt-cache show "$1=$2" >/dev/null 2>&1
}

# _apt_field NAME VERSION FIELD: one field of NAME=VERSION's index record.
_apt_field() {
  apt-cache show "$1=$2" 2>/dev/null | sed -n "s/^$3: //p" | head -n 1
}

# _apt_meta_target META: sets APT_PIN_NAME/APT_PIN_VERSION to the first
# exact dependency ("NAME (= VERSION)") of META's candidate version, whose
# target the lists know.
_apt_meta_target() {
  local meta=$1 depends dep n v exact='^[[:space:]]*([a-z0-9][a-z0-9+.-]*)[[:space:]]*[(]=[[:space:]]*([^[:space:])]+)[)]'
  depends=$(apt-cache show --no-all-versions "$meta" 2>/dev/null | sed -n 's/^Depends: //p' | head -n 1)
  while IFS= read -r dep; do
    dep=${dep%%|*}
    [[ $dep =~ $exact ]] || continue
    n=${BASH_REMATCH[1]} v=${BASH_REMATCH[2]}
    if _apt_listed "$n" "$v"; then
      APT_PIN_NAME=$n APT_PIN_VERSION=$v
      return 0
    fi
  done < <(tr ',' '\n' <<<"$depends")
  return 1
}

# _apt_download DIR NAME VERSION: apt-get download into DIR (log in
# DIR/apt.log); sets APT_PIN_DEB. apt itself refuses a .deb whose hash
# differs from the index's.
_apt_download() {
  local dir=$1 debs
  rm -f "$dir"/*.deb
  (cd "$dir" && apt-get download -q "$2=$3") >"$dir/apt.log" 2>&1 || return 1
  debs=("$dir"/*.deb)
  [[ -f ${debs[0]} && ${#debs[@]} == 1 ]] || die "apt-get download $2=$3 left no single .deb in $dir"
  APT_PIN_DEB=${debs[0]}
}

# _apt_update: one `apt-get update`, as root; elsewhere, false. A source
# that fails (an unreachable third-party repository) does not stop it: the
# Debian lists it did refresh are what the fetch needs.
_apt_update() {
  ((EUID == 0)) || return 1
  printf '%s: refreshing the apt package lists (apt-get update)\n' "${0##*/}" >&2
  apt-get update -q >&2 ||
    printf '%s: apt-get update reported errors (above); going on with the lists it refreshed\n' "${0##*/}" >&2
}
