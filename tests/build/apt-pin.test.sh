#!/usr/bin/env bash
# tests/build/apt-pin.test.sh: scripts/lib-apt.sh (how the build fetches its
# pinned .debs) against local apt repositories this test makes, through an
# apt configuration of its own (APT_CONFIG): the machine's apt state is
# never read or written. Needs root (apt-get update, as the build does) and
# dpkg-dev (dpkg-scanpackages).
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
. "$root/scripts/lib-cache.sh"
. "$root/scripts/lib-apt.sh"

((EUID == 0)) || die "needs root: the fetch runs apt-get update as root"
need_pkgs dpkg-dev

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
chmod 0755 "$work" # apt's _apt user reads the repository and the lists
mkdir -p "$work"/{build,pool,repo,lists/partial,cache/archives/partial,parts,prefs,out}
: >"$work/status"
printf 'deb [trusted=yes] file:%s/repo ./\n' "$work" >"$work/sources.list"
cat >"$work/apt.conf" <<CONF
Dir::Etc::sourcelist "$work/sources.list";
Dir::Etc::sourceparts "$work/parts";
Dir::Etc::preferencesparts "$work/prefs";
Dir::State::Lists "$work/lists";
Dir::State::status "$work/status";
Dir::Cache "$work/cache";
APT::Architecture "amd64";
APT::Architectures "amd64";
Acquire::Languages "none";
CONF
export APT_CONFIG=$work/apt.conf

# deb NAME VERSION [DEPENDS]: a minimal package in pool/.
deb() {
  local d=$work/build/$1_$2
  mkdir -p "$d/DEBIAN" "$d/usr/share/$1"
  printf '%s %s\n' "$1" "$2" >"$d/usr/share/$1/version"
  {
    printf 'Package: %s\nVersion: %s\nArchitecture: amd64\nMaintainer: test <test@example.invalid>\n' "$1" "$2"
    [[ -z ${3:-} ]] || printf 'Depends: %s\n' "$3"
    printf 'Description: apt-pin test package\n'
  } >"$d/DEBIAN/control"
  dpkg-deb --root-owner-group --build "$d" "$work/pool/$1_$2_amd64.deb" >/dev/null
}

# publish: the repository's index of what pool/ holds now (a flat repository
# with a Release file, as apt wants one even for trusted=yes).
publish() {
  (cd "$work" && dpkg-scanpackages -m pool /dev/null 2>/dev/null) >"$work/repo/Packages"
  rm -f "$work/repo/pool" && ln -s ../pool "$work/repo/pool"
  {
    printf 'Origin: apt-pin-test\nLabel: apt-pin-test\nSuite: test\nCodename: test\nArchitectures: amd64\n'
    printf 'Date: %s\nSHA256:\n' "$(date -Ru)"
    printf ' %s %s Packages\n' "$(sha256sum <"$work/repo/Packages" | cut -d' ' -f1)" "$(stat -c %s "$work/repo/Packages")"
  } >"$work/repo/Release"
}

sha() { sha256sum <"$work/pool/$1_$2_amd64.deb" | cut -d' ' -f1; }

# fetch NAME VERSION SHA META: runs apt_pin_fetch in a subshell (it exits on
# failure); sets rc, err (its stderr) and got ("NAME VERSION DEB-BASENAME").
fetch() {
  rm -rf "$work/out" && mkdir -p "$work/out" && chmod 0755 "$work/out"
  rc=0
  got=$(apt_pin_fetch "$work/out" "$@" 2>"$work/stderr" &&
    printf '%s %s %s\n' "$APT_PIN_NAME" "$APT_PIN_VERSION" "${APT_PIN_DEB##*/}") || rc=$?
  err=$(<"$work/stderr")
}

failures=0
check() { # check NAME CONDITION...
  local name=$1
  shift
  if "$@"; then
    printf 'ok   %s\n' "$name"
  else
    printf 'FAIL %s\n  rc=%s got=%q\n  stderr: %s\n' "$name" "$rc" "$got" "$err"
    failures=$((failures + 1))
  fi
}
has() { [[ $1 == *"$2"* ]]; }

deb linux-image-6.1.0-50-amd64 6.1.176-1
deb linux-image-6.1.0-51-amd64 6.1.192-3
deb linux-image-amd64 6.1.192-3 'linux-image-6.1.0-51-amd64 (= 6.1.192-3)'
pin_sha=$(sha linux-image-6.1.0-50-amd64 6.1.176-1)

# 1. A fresh machine: no lists at all. The pin is served: one update, the
#    pin is used and checked against its sha256, and nothing is said.
publish
fetch linux-image-6.1.0-50-amd64 6.1.176-1 "$pin_sha" linux-image-amd64
check "no lists: updates once, uses the pin" \
  eval '((rc == 0)) && [[ $got == "linux-image-6.1.0-50-amd64 6.1.176-1 linux-image-6.1.0-50-amd64_6.1.176-1_amd64.deb" ]] && has "$err" "apt-get update" && ! has "$err" "does not serve"'
# The resolver without network agrees now that the lists know the pin.
apt_pin_resolve linux-image-6.1.0-50-amd64 6.1.176-1 linux-image-amd64
check "resolve: the listed pin" eval '[[ "$APT_PIN_NAME=$APT_PIN_VERSION" == linux-image-6.1.0-50-amd64=6.1.176-1 ]]'

# 2. Lists up to date, pin served: no update, pin used.
fetch linux-image-6.1.0-50-amd64 6.1.176-1 "$pin_sha" linux-image-amd64
check "pin listed and served: used without an update" \
  eval '((rc == 0)) && has "$got" "6.1.176-1" && ! has "$err" "apt-get update"'

# 3. The pin's bytes differ from its pinned sha256: refused.
fetch linux-image-6.1.0-50-amd64 6.1.176-1 "$(printf '0%.0s' {1..64})" linux-image-amd64
check "pin with another sha256: refused" eval '((rc != 0)) && has "$err" "does not match its pinned sha256"'

# 4. Stale lists (older than the pin): the pin appears only after an update.
mv "$work/pool/linux-image-6.1.0-50-amd64_6.1.176-1_amd64.deb" "$work/pin.deb"
publish
apt-get update -qq
mv "$work/pin.deb" "$work/pool/linux-image-6.1.0-50-amd64_6.1.176-1_amd64.deb"
publish
fetch linux-image-6.1.0-50-amd64 6.1.176-1 "$pin_sha" linux-image-amd64
check "stale lists without the pin: updates, uses the pin" \
  eval '((rc == 0)) && has "$got" "linux-image-6.1.0-50-amd64 6.1.176-1" && has "$err" "apt-get update" && ! has "$err" "does not serve"'

# 5. The mirror dropped the pin after the lists were fetched (lists name it,
#    the download fails): update, then the metapackage's kernel, said.
rm "$work/pool/linux-image-6.1.0-50-amd64_6.1.176-1_amd64.deb"
publish
fetch linux-image-6.1.0-50-amd64 6.1.176-1 "$pin_sha" linux-image-amd64
check "pin dropped by the mirror: falls back to what the metapackage depends on, and says so" \
  eval '((rc == 0)) && [[ $got == "linux-image-6.1.0-51-amd64 6.1.192-3 linux-image-6.1.0-51-amd64_6.1.192-3_amd64.deb" ]] &&
        has "$err" "does not serve the pinned linux-image-6.1.0-50-amd64=6.1.176-1; using linux-image-6.1.0-51-amd64=6.1.192-3" &&
        has "$err" "$(sha linux-image-6.1.0-51-amd64 6.1.192-3)"'
apt_pin_resolve linux-image-6.1.0-50-amd64 6.1.176-1 linux-image-amd64
check "resolve: the fallback, without network" eval '[[ "$APT_PIN_NAME=$APT_PIN_VERSION" == linux-image-6.1.0-51-amd64=6.1.192-3 ]]'

# 6. The fallback's bytes differ from what the index lists: apt refuses it
#    (a mirror serving other bytes than its signed index names).
cp "$work/pool/linux-image-6.1.0-51-amd64_6.1.192-3_amd64.deb" "$work/good.deb"
printf 'x' >>"$work/pool/linux-image-6.1.0-51-amd64_6.1.192-3_amd64.deb"
fetch linux-image-6.1.0-50-amd64 6.1.176-1 "$pin_sha" linux-image-amd64
check "fallback whose bytes differ from the index: refused" \
  eval '((rc != 0)) && has "$err" "apt-get download linux-image-6.1.0-51-amd64=6.1.192-3 failed" && has "$err" "Hash Sum mismatch"'
mv "$work/good.deb" "$work/pool/linux-image-6.1.0-51-amd64_6.1.192-3_amd64.deb"

# 7. Nothing usable: neither the pin nor the metapackage.
rm "$work"/pool/linux-image-amd64_*.deb
publish
fetch linux-image-6.1.0-50-amd64 6.1.176-1 "$pin_sha" linux-image-amd64
check "neither pin nor metapackage: a clear error" \
  eval '((rc != 0)) && has "$err" "the mirror serves neither the pinned linux-image-6.1.0-50-amd64=6.1.176-1 nor a package linux-image-amd64 depends on (even after apt-get update)"'

((failures == 0)) || die "$failures apt-pin case(s) failed"
echo "apt-pin: all cases passed"
