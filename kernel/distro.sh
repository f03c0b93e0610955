#!/usr/bin/env bash
# kernel/distro.sh OUTDIR
#
# Debian's own kernel, for `npm run bench` only: the kernel floor is
# measured with our kernel and with this one, on the same machine options
# and init (bench/kernelfloor). Nothing at run time uses it. Writes into
# OUTDIR:
#   vmlinux       uncompressed ELF kernel with a Xen PVH entry note
#   kernel.json   package, version and release
# from the one package pinned in distro.env (or, when the mirror dropped it,
# the current one of the same flavour: scripts/lib-apt.sh). Cached by the
# hash of this script, lib.sh, distro.env and the package version used.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
. "$here/../scripts/lib-cache.sh"
. "$here/../scripts/lib-apt.sh"
. "$here/lib.sh"
. "$here/distro.env"

# The bzImage wraps a compressed ELF vmlinux. QEMU boots that ELF directly
# through its PVH note, which skips ~2.3 s of in-guest decompression under TCG.
# Boot protocol offsets: setup_sects at 0x1f1, "HdrS" at 0x202,
# payload_offset/payload_length at 0x248 (relative to the protected-mode code,
# which starts after the (setup_sects + 1) 512-byte sectors of setup).
extract_vmlinux() {
  local bz=$1 out=$2 setup_sects payload_off payload_len start magic
  [[ $(dd if="$bz" bs=1 skip=$((0x202)) count=4 status=none) == HdrS ]] ||
    die "$bz is not a bzImage (no HdrS boot header)"
  setup_sects=$(od -An -tu1 -j $((0x1f1)) -N1 "$bz" | tr -d ' ')
  ((setup_sects)) || setup_sects=4 # 0 means 4 in the boot protocol
  read -r payload_off payload_len < <(od -An -tu4 -j $((0x248)) -N8 "$bz")
  start=$(((setup_sects + 1) * 512 + payload_off))
  magic=$(od -An -tx1 -j "$start" -N6 "$bz" | tr -d ' \n')
  # Debian's amd64 kernels use XZ; another compression needs another decoder.
  [[ $magic == fd377a585a00 ]] ||
    die "kernel payload of $bz is not XZ (magic $magic): extract_vmlinux needs a decoder for it"
  # --single-stream: the build appends the uncompressed size after the stream.
  dd if="$bz" iflag=skip_bytes,count_bytes skip="$start" count="$payload_len" bs=1M status=none |
    xz -dc --single-stream >"$out"
}

# The metapackage that depends on the current kernel of the pinned flavour.
DISTRO_META=linux-image-amd64

# cache_build callback: one cache entry in $1 from the .deb at $DISTRO_DEB.
build_entry() {
  local entry=$1 work=$1/.work
  need_pkgs binutils xz-utils
  mkdir -p "$work/root"
  mv "$DISTRO_DEB" "$work/"
  DISTRO_DEB=$work/${DISTRO_DEB##*/}
  rm -rf "$DISTRO_DOWNLOAD"
  dpkg-deb -x "$DISTRO_DEB" "$work/root"
  extract_vmlinux "$work/root/boot/vmlinuz-${DISTRO_PACKAGE#linux-image-}" "$entry/vmlinux"
  check_pvh "$entry/vmlinux"
  printf '{"package":"%s","version":"%s","release":"%s","vmlinux":"vmlinux"}\n' \
    "$DISTRO_PACKAGE" "$DISTRO_VERSION" "${DISTRO_PACKAGE#linux-image-}" >"$entry/kernel.json"
  rm -rf "$work"
}

distro_key() {
  cache_key "$here/distro.sh" "$here/lib.sh" "$here/distro.env" -- "$DISTRO_PACKAGE=$DISTRO_VERSION"
}

main() {
  (($# == 1)) || die "usage: kernel/distro.sh OUTDIR"
  local out=$1 f pin_name=$DISTRO_PACKAGE pin_version=$DISTRO_VERSION
  apt_pin_resolve "$pin_name" "$pin_version" "$DISTRO_META"
  DISTRO_PACKAGE=$APT_PIN_NAME DISTRO_VERSION=$APT_PIN_VERSION
  if [[ ! -d $(cache_root)/distro-kernel/$(distro_key) ]]; then
    mkdir -p "$(cache_root)/distro-kernel" ||
      die "cannot create cache directory $(cache_root)/distro-kernel (set SANDBOX_CACHE_DIR to a writable place)"
    DISTRO_DOWNLOAD=$(mktemp -d "$(cache_root)/distro-kernel/.download.XXXXXX")
    trap 'rm -rf "$DISTRO_DOWNLOAD"' EXIT
    apt_pin_fetch "$DISTRO_DOWNLOAD" "$pin_name" "$pin_version" "$DISTRO_DEB_SHA256" "$DISTRO_META"
    DISTRO_PACKAGE=$APT_PIN_NAME DISTRO_VERSION=$APT_PIN_VERSION DISTRO_DEB=$APT_PIN_DEB
  fi
  cache_build distro-kernel "$(distro_key)" build_entry
  if [[ -n ${DISTRO_DOWNLOAD:-} ]]; then
    rm -rf "$DISTRO_DOWNLOAD"
    trap - EXIT
  fi
  mkdir -p "$out"
  for f in vmlinux kernel.json; do
    link_or_copy "$CACHE_ENTRY/$f" "$out/$f"
  done
}

main "$@"
