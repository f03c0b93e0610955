#!/usr/bin/env bash
# kernel/build.sh OUTDIR
#
# The guest kernel: Debian's kernel source (the package pinned in pin.env)
# built with our configuration, guest.config merged over `make tinyconfig`.
# Every driver the guest uses is built in; there are no modules. Writes into
# OUTDIR:
#   vmlinux       uncompressed ELF kernel with a Xen PVH entry note, symbols
#                 stripped (QEMU and libkrun load its segments only)
#   config        the full .config it was built with
#   kernel.json   source package, version and kernel release
# The package is the pin when the mirror serves it, else the current one
# (scripts/lib-apt.sh says which and how it was verified). The result is
# cached by the hash of this script, lib.sh, pin.env, guest.config and the
# package version actually used; OUTDIR is filled from the cache with hard
# links when it can be. A cold build takes about 20 CPU-minutes
# (kernel/README.md has the figures).
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
. "$here/../scripts/lib-cache.sh"
. "$here/../scripts/lib-apt.sh"
. "$here/lib.sh"
. "$here/pin.env"

# The metapackage that depends on the current kernel source: what replaces
# a pin the mirror no longer serves.
SOURCE_META=linux-source

# check_config CONFIG FRAGMENT: every option of FRAGMENT has the value asked
# for in CONFIG. Kconfig drops a value whose dependencies are unmet, and a
# `select` elsewhere can force one on, both silently.
check_config() {
  local config=$1 fragment=$2 line name want got bad=()
  while IFS= read -r line; do
    [[ $line =~ ^(CONFIG_[A-Za-z0-9_]+)=(.*)$ ]] || continue
    name=${BASH_REMATCH[1]} want=${BASH_REMATCH[2]}
    got=$(sed -n "s/^$name=//p" "$config")
    if [[ $want == n ]]; then
      [[ -z $got ]] || bad+=("$name=$got (want n)")
    elif [[ $got != "$want" ]]; then
      bad+=("$name=${got:-n} (want $want)")
    fi
  done <"$fragment"
  ((${#bad[@]} == 0)) ||
    die "guest.config asks for values Kconfig did not keep (a dependency unmet, or selected by another option): ${bad[*]}"
}

# cache_build callback: builds one cache entry in $1 from the .deb at
# $SOURCE_DEB (in $SOURCE_DOWNLOAD).
build_entry() {
  local entry=$1 work=$1/.work src tarball
  need_pkgs make gcc flex bison bc libelf-dev binutils xz-utils
  mkdir -p "$work"
  mv "$SOURCE_DEB" "$work/"
  SOURCE_DEB=$work/${SOURCE_DEB##*/}
  rm -rf "$SOURCE_DOWNLOAD"
  dpkg-deb -x "$SOURCE_DEB" "$work/deb"
  rm "$SOURCE_DEB"
  tarball=("$work"/deb/usr/src/linux-source-*.tar.xz)
  [[ -f ${tarball[0]} && ${#tarball[@]} == 1 ]] ||
    die "$SOURCE_PACKAGE=$SOURCE_VERSION holds no single usr/src/linux-source-*.tar.xz"
  tar -xJf "${tarball[0]}" -C "$work"
  rm -rf "$work/deb"
  src=$(find "$work" -mindepth 1 -maxdepth 1 -type d -name 'linux-source-*' -print -quit)
  [[ -n $src && -f $src/Makefile ]] || die "the source tarball of $SOURCE_PACKAGE has no linux-source-* tree"

  # Fixed build metadata, so that equal inputs give an equal kernel.
  local kmake=(make -C "$src" -s KBUILD_BUILD_TIMESTAMP=@0 KBUILD_BUILD_USER=sandbox
    KBUILD_BUILD_HOST=sandbox KBUILD_BUILD_VERSION=1)
  "${kmake[@]}" tinyconfig >"$work/config.log" 2>&1 || {
    cat "$work/config.log" >&2
    die "make tinyconfig failed in $src"
  }
  # -m: merge only; olddefconfig then settles the rest, and check_config
  # (not merge_config.sh's own slow report) says what Kconfig overruled.
  (cd "$src" && scripts/kconfig/merge_config.sh -m .config "$here/guest.config" &&
    make -s olddefconfig) >>"$work/config.log" 2>&1 || {
    cat "$work/config.log" >&2
    die "merging kernel/guest.config over tinyconfig failed (scripts/kconfig/merge_config.sh)"
  }
  check_config "$src/.config" "$here/guest.config"
  "${kmake[@]}" -j"$(nproc)" vmlinux >"$work/build.log" 2>&1 || {
    tail -n 60 "$work/build.log" >&2
    die "the kernel build failed (make vmlinux in $src; the log's tail is above)"
  }
  strip -o "$entry/vmlinux" "$src/vmlinux"
  check_pvh "$entry/vmlinux"
  install -m 0644 "$src/.config" "$entry/config"
  local release
  release=$("${kmake[@]}" kernelrelease)
  printf '{"package":"%s","version":"%s","release":"%s","vmlinux":"vmlinux"}\n' \
    "$SOURCE_PACKAGE" "$SOURCE_VERSION" "$release" >"$entry/kernel.json"
  rm -rf "$work"
}

# kernel_key: the cache key of a build from $SOURCE_PACKAGE=$SOURCE_VERSION.
kernel_key() {
  cache_key "$here/build.sh" "$here/lib.sh" "$here/pin.env" "$here/guest.config" -- "$SOURCE_PACKAGE=$SOURCE_VERSION"
}

main() {
  (($# == 1)) || die "usage: kernel/build.sh OUTDIR"
  local out=$1 f
  # Which source the lists point at (no network): a cached build of it
  # needs nothing else.
  apt_pin_resolve "$KERNEL_SOURCE_PACKAGE" "$KERNEL_SOURCE_VERSION" "$SOURCE_META"
  SOURCE_PACKAGE=$APT_PIN_NAME SOURCE_VERSION=$APT_PIN_VERSION
  if [[ ! -d $(cache_root)/kernel/$(kernel_key) ]]; then
    mkdir -p "$(cache_root)/kernel" ||
      die "cannot create cache directory $(cache_root)/kernel (set SANDBOX_CACHE_DIR to a writable place)"
    # Global: the trap reads it; build_entry moves the .deb out of it.
    SOURCE_DOWNLOAD=$(mktemp -d "$(cache_root)/kernel/.download.XXXXXX")
    trap 'rm -rf "$SOURCE_DOWNLOAD"' EXIT
    apt_pin_fetch "$SOURCE_DOWNLOAD" "$KERNEL_SOURCE_PACKAGE" "$KERNEL_SOURCE_VERSION" "$KERNEL_SOURCE_SHA256" "$SOURCE_META"
    SOURCE_PACKAGE=$APT_PIN_NAME SOURCE_VERSION=$APT_PIN_VERSION SOURCE_DEB=$APT_PIN_DEB
  fi
  cache_build kernel "$(kernel_key)" build_entry
  if [[ -n ${SOURCE_DOWNLOAD:-} ]]; then
    rm -rf "$SOURCE_DOWNLOAD"
    trap - EXIT
  fi
  mkdir -p "$out"
  # Only our names: OUTDIR also holds the initrd built next to them.
  for f in vmlinux config kernel.json; do
    link_or_copy "$CACHE_ENTRY/$f" "$out/$f"
  done
  # A modules/ directory left by a distro-kernel build of the past.
  rm -rf "$out/modules"
}

main "$@"
