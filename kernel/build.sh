#!/usr/bin/env bash
# kernel/build.sh OUTDIR
#
# The guest kernel and the modules its init loads, from the one Debian package
# pinned in pin.env. Writes into OUTDIR:
#   vmlinux              uncompressed ELF kernel with a Xen PVH entry note
#   modules/*.ko         the modules of modules.list plus their dependencies,
#                        uncompressed, debug info and signatures stripped
#   modules/load.order   their file names, dependencies first, each followed
#                        by the groups it is loaded for (none: always)
#   kernel.json          package, version and release of the kernel
# The package is the pin when the mirror serves it, else the current one of
# the same flavour (scripts/lib-apt.sh says which and how it was verified).
# The result is cached by the hash of this script, pin.env, modules.list and
# the package version actually used; OUTDIR is filled from the cache with
# hard links when it can be.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
. "$here/../scripts/lib-cache.sh"
. "$here/../scripts/lib-apt.sh"
. "$here/pin.env"

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

# QEMU's -kernel takes an ELF only through its PVH note (XEN_ELFNOTE_PHYS32_ENTRY, 18).
check_pvh() {
  readelf -h "$1" 2>/dev/null | grep -q 'Class:.*ELF64' ||
    die "extracted $1 is not an ELF64 file"
  readelf -n "$1" | grep -qE 'Xen .*(\(0x00000012\)|PHYS32_ENTRY)' ||
    die "$1 has no Xen PVH entry note: QEMU cannot boot it as an ELF kernel"
}

# The entries of modules.list, without comments and blank lines: a module
# name ('-' normalised to '_'), then its group if it has one ("@network").
requested_modules() {
  sed -e 's/#.*//' -e '/^[[:space:]]*$/d' "$here/modules.list" |
    while read -r name group; do printf '%s %s\n' "${name//-/_}" "${group#@}"; done
}

declare -A mod_path=() mod_deps=() mod_builtin=() mod_aliases=() mod_seen=()
# mod_groups: the groups a module loads for ("" for always); visited: the
# (group, module) pairs a walk has covered.
declare -A mod_groups=() visited=()
load_order=()

# Reads the depmod indexes of the unpacked kernel into the mod_* tables,
# keyed by module name ('-' normalised to '_', as the kernel does).
read_module_indexes() {
  local moddir=$1 line path name alias target
  while IFS= read -r line; do
    path=${line%%:*}
    name=${path##*/}
    name=${name%%.ko*}
    name=${name//-/_}
    mod_path[$name]=$path
    mod_deps[$name]=${line#*:}
  done <"$moddir/modules.dep"
  while IFS= read -r path; do
    name=${path##*/}
    name=${name%%.ko*}
    mod_builtin[${name//-/_}]=1
  done <"$moddir/modules.builtin"
  while read -r _ alias target; do
    mod_aliases[$alias]+=" $target"
  done <"$moddir/modules.alias"
}

# Depth-first over modules.dep: every module after all of its dependencies.
# A module belongs to every group that needs it, or to none (always loaded)
# when an ungrouped module needs it; ungrouped entries are walked first.
visit_module() {
  local name=$1 group=$2 dep
  [[ -n ${mod_builtin[$name]:-} || -n ${visited[$group/$name]:-} ]] && return 0
  [[ -n ${mod_path[$name]:-} ]] ||
    die "module $name (kernel/modules.list) is not in $KERNEL_RELEASE: neither a module nor built in"
  visited[$group/$name]=1
  for dep in ${mod_deps[$name]}; do
    dep=${dep##*/}
    dep=${dep%%.ko*}
    visit_module "${dep//-/_}" "$group"
  done
  if [[ -z ${mod_seen[$name]:-} ]]; then
    mod_seen[$name]=1
    load_order+=("$name")
    mod_groups[$name]=${group:+ $group}
  elif [[ -n ${mod_groups[$name]} ]]; then
    mod_groups[$name]+=" $group"
  fi
}

# modprobe would load soft dependencies (e.g. ext4 -> crypto-crc32c) by
# alias; the guest has no modprobe, so one implementation must be in the set.
check_softdeps() {
  local moddir=$1 mod deps want candidates c ok
  while read -r _ mod deps; do
    mod=${mod//-/_}
    [[ -n ${mod_seen[$mod]:-} ]] || continue
    for want in $deps; do
      [[ $want == *: ]] && continue # the "pre:" / "post:" markers
      candidates=${mod_aliases[$want]:-}
      [[ -n ${mod_path[${want//-/_}]:-} ]] && candidates+=" ${want//-/_}"
      ok=
      for c in $candidates; do
        [[ -n ${mod_seen[$c]:-} || -n ${mod_builtin[$c]:-} ]] && ok=1
      done
      [[ -n $ok ]] ||
        die "module $mod has a soft dependency on '$want': add one of [${candidates# }] to kernel/modules.list"
    done
  done < <(grep '^softdep ' "$moddir/modules.softdep")
}

# Copies the resolved modules, uncompressed, without debug info and without
# the appended signature (strip rewrites the ELF and drops it): the guest
# does not verify signatures and smaller modules load faster under TCG.
install_modules() {
  local moddir=$1 dest=$2 name src ko
  mkdir -p "$dest"
  for name in "${load_order[@]}"; do
    src=$moddir/${mod_path[$name]}
    ko=${src##*/}
    ko=${ko%%.ko*}.ko
    case $src in
      *.ko) cp "$src" "$dest/$ko" ;;
      *.ko.xz) xz -dc "$src" >"$dest/$ko" ;;
      *.ko.zst) zstd -qdc "$src" >"$dest/$ko" ;;
      *) die "unknown module file type: $src" ;;
    esac
    strip --strip-debug "$dest/$ko"
    printf '%s%s\n' "$ko" "${mod_groups[$name]}" >>"$dest/load.order"
  done
}

# The metapackage that depends on the current kernel of the pinned flavour:
# what replaces a pin the mirror no longer serves.
KERNEL_META=linux-image-amd64

# cache_build callback: builds one cache entry in $1 from the .deb at
# $KERNEL_DEB (in $KERNEL_DOWNLOAD), the package $KERNEL_PACKAGE=$KERNEL_VERSION.
build_entry() {
  local entry=$1 work=$1/.work moddir name
  need_pkgs kmod binutils xz-utils zstd
  mkdir -p "$work/root"
  # Into the entry's temp dir, which cache_build removes if this fails.
  mv "$KERNEL_DEB" "$work/"
  KERNEL_DEB=$work/${KERNEL_DEB##*/}
  rm -rf "$KERNEL_DOWNLOAD"
  dpkg-deb -x "$KERNEL_DEB" "$work/root"
  extract_vmlinux "$work/root/boot/vmlinuz-$KERNEL_RELEASE" "$entry/vmlinux"
  check_pvh "$entry/vmlinux"

  # Debian generates modules.dep at install time (postinst), so make it here.
  moddir=$work/root/lib/modules/$KERNEL_RELEASE
  PATH=$PATH:/usr/sbin:/sbin depmod -b "$work/root" "$KERNEL_RELEASE"
  read_module_indexes "$moddir"
  local group
  while read -r name group; do [[ -n $group ]] || visit_module "$name" ""; done < <(requested_modules)
  while read -r name group; do [[ -z $group ]] || visit_module "$name" "$group"; done < <(requested_modules)
  check_softdeps "$moddir"
  install_modules "$moddir" "$entry/modules"

  printf '{"package":"%s","version":"%s","release":"%s","vmlinux":"vmlinux"}\n' \
    "$KERNEL_PACKAGE" "$KERNEL_VERSION" "$KERNEL_RELEASE" >"$entry/kernel.json"
  rm -rf "$work"
}

# kernel_key: the cache key of $KERNEL_PACKAGE=$KERNEL_VERSION.
kernel_key() {
  cache_key "$here/build.sh" "$here/pin.env" "$here/modules.list" -- "$KERNEL_PACKAGE=$KERNEL_VERSION"
}

# use_package NAME VERSION: the kernel to build from now on.
use_package() {
  KERNEL_PACKAGE=$1 KERNEL_VERSION=$2 KERNEL_RELEASE=${1#linux-image-}
}

main() {
  (($# == 1)) || die "usage: kernel/build.sh OUTDIR"
  local out=$1 f pin_name=$KERNEL_PACKAGE pin_version=$KERNEL_VERSION
  # Which kernel the lists point at (no network): a cached build of it
  # needs nothing else.
  apt_pin_resolve "$pin_name" "$pin_version" "$KERNEL_META"
  use_package "$APT_PIN_NAME" "$APT_PIN_VERSION"
  if [[ ! -d $(cache_root)/kernel/$(kernel_key) ]]; then
    mkdir -p "$(cache_root)/kernel" ||
      die "cannot create cache directory $(cache_root)/kernel (set SANDBOX_CACHE_DIR to a writable place)"
    # Global: the trap reads it; build_entry moves the .deb out of it.
    KERNEL_DOWNLOAD=$(mktemp -d "$(cache_root)/kernel/.download.XXXXXX")
    trap 'rm -rf "$KERNEL_DOWNLOAD"' EXIT
    apt_pin_fetch "$KERNEL_DOWNLOAD" "$pin_name" "$pin_version" "$KERNEL_DEB_SHA256" "$KERNEL_META"
    use_package "$APT_PIN_NAME" "$APT_PIN_VERSION"
    KERNEL_DEB=$APT_PIN_DEB
  fi
  cache_build kernel "$(kernel_key)" build_entry
  if [[ -n ${KERNEL_DOWNLOAD:-} ]]; then
    rm -rf "$KERNEL_DOWNLOAD"
    trap - EXIT
  fi
  mkdir -p "$out"
  # Only our names: OUTDIR also holds the initrd built next to them.
  for f in vmlinux modules kernel.json; do
    link_or_copy "$CACHE_ENTRY/$f" "$out/$f"
  done
}

main "$@"
