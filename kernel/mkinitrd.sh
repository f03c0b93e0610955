#!/usr/bin/env bash
# kernel/mkinitrd.sh INIT_BINARY OUT.cpio
#
# Packs a guest initramfs: /init (the static INIT_BINARY) and the empty
# mount points sandbox-init uses. No modules: the kernel has its drivers
# built in (kernel/README.md). newc, uncompressed (decompressing costs more
# than reading under TCG), everything owned by 0:0 with a fixed mtime in
# sorted order, so equal inputs give an identical file. Runs on every build:
# no cache, it takes milliseconds. `npm run bench` packs its kernel floor's
# one-line init (bench/kernelfloor) with it too.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
. "$here/../scripts/lib-cache.sh"

# The initramfs has no libc or loader: a dynamic /init panics the kernel.
check_static() {
  readelf -h "$1" >/dev/null 2>&1 || die "init $1 is not an ELF executable"
  ! readelf -l "$1" 2>/dev/null | grep -q 'INTERP' ||
    die "init $1 is dynamically linked; build it static (CGO_ENABLED=0 for Go)"
}

main() {
  (($# == 2)) || die "usage: kernel/mkinitrd.sh INIT_BINARY OUT.cpio"
  local init=$1 out=$2
  [[ -f $init ]] || die "no init binary at $init"
  check_static "$init"

  stage=$(mktemp -d) # global: the EXIT trap runs after main returns
  trap 'rm -rf "$stage"' EXIT
  mkdir -p "$stage"/{proc,sys,dev,newroot,tmp}
  install -m 0755 "$init" "$stage/init"
  chmod 0755 "$stage" "$stage"/{proc,sys,dev,newroot}
  chmod 1777 "$stage/tmp"
  find "$stage" -exec touch -h -d @0 {} +

  mkdir -p "$(dirname "$out")"
  # Write beside OUT and rename: a reader never sees a partial initrd.
  (cd "$stage" && find . -mindepth 1 -printf '%P\n' | LC_ALL=C sort |
    cpio -o -H newc -R 0:0 --reproducible --quiet) >"$out.tmp"
  mv "$out.tmp" "$out"
}

main "$@"
