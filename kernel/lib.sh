# shellcheck shell=bash
# What kernel/build.sh and kernel/distro.sh share. Source it after
# scripts/lib-cache.sh (it uses die).

# check_pvh VMLINUX: QEMU's -kernel takes an ELF only through its PVH note
# (XEN_ELFNOTE_PHYS32_ENTRY, 18).
check_pvh() {
  readelf -h "$1" 2>/dev/null | grep -q 'Class:.*ELF64' ||
    die "$1 is not an ELF64 file"
  readelf -n "$1" | grep -qE 'Xen .*(\(0x00000012\)|PHYS32_ENTRY)' ||
    die "$1 has no Xen PVH entry note: QEMU cannot boot it as an ELF kernel"
}
