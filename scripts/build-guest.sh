#!/usr/bin/env bash
# scripts/build-guest.sh INIT_BINARY PLATFORM_DIR
#
# Builds the guest artifacts of one platform package:
#   PLATFORM_DIR/artifacts/kernel/{vmlinux,config,kernel.json}     kernel/build.sh
#   PLATFORM_DIR/artifacts/kernel/initrd.cpio                      kernel/mkinitrd.sh
#   PLATFORM_DIR/artifacts/images/{*.qcow2,catalog.json}           images/build.sh
#   <image package>/artifacts/images/{*.qcow2,catalog.json}        images/build.sh
# where an image package is the directory beside PLATFORM_DIR of an image
# shipped in a package of its own (IMAGE_PACKAGES in src/artifacts.ts).
# Kernel and images come from the cache when their recipes did not change
# (see docs/artifacts.md); one line per step, details only on failure.
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
. "$root/scripts/lib-cache.sh"

# Built-in images with a recipe buildable here: into the platform package,
# and (recipe:package directory) into packages of their own.
IMAGES=(debian-13-slim)
OWN_PACKAGE_IMAGES=(debian-13:image-debian-13-linux-x64)

now_us() { printf '%s\n' "${EPOCHREALTIME/./}"; }

step() {
  local what=$1 start ms
  shift
  start=$(now_us)
  "$@"
  ms=$((($(now_us) - start) / 1000))
  printf 'build-guest: %-22s %d.%03ds\n' "$what" $((ms / 1000)) $((ms % 1000))
}

main() {
  (($# == 2)) || die "usage: scripts/build-guest.sh INIT_BINARY PLATFORM_DIR"
  local init=$1 out=$2/artifacts name
  [[ -f $init ]] || die "no init binary at $init (build sandbox-init first)"
  step kernel "$root/kernel/build.sh" "$out/kernel"
  step initrd "$root/kernel/mkinitrd.sh" "$init" "$out/kernel/initrd.cpio"
  for name in "${IMAGES[@]}"; do
    step "image $name" "$root/images/build.sh" "$name" "$out"
  done
  for name in "${OWN_PACKAGE_IMAGES[@]}"; do
    step "image ${name%%:*}" "$root/images/build.sh" "${name%%:*}" "$(dirname "$2")/${name#*:}/artifacts"
  done
}

main "$@"
