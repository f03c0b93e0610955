#!/usr/bin/env bash
# scripts/without-kvm.sh COMMAND [ARG...]
#
# Runs COMMAND where /dev/kvm does not exist, whatever this machine has: in
# a mount namespace of its own whose /dev is a copy of the real one (each
# entry bind-mounted from it) without kvm. The rest of the system, and the
# machine's own /dev, are untouched. Needs root (unshare --mount).
# scripts/test.sh runs the engine-selection and libkrun tests this way, so
# a machine without KVM is tested on every machine.
set -euo pipefail
. "$(dirname "${BASH_SOURCE[0]}")/lib-cache.sh"

if [[ ${1:-} != --in-namespace ]]; then
  ((EUID == 0)) || die "needs root to make a mount namespace (unshare --mount)"
  (($#)) || die "usage: scripts/without-kvm.sh COMMAND [ARG...]"
  exec unshare --mount --propagation private "$0" --in-namespace "$@"
fi
shift

dev=$(mktemp -d)
mount -t tmpfs -o mode=0755,nosuid tmpfs "$dev"
for entry in /dev/* /dev/.[!.]*; do
  [[ -e $entry || -L $entry ]] || continue
  name=${entry##*/}
  [[ $name != kvm ]] || continue
  if [[ -L $entry ]]; then
    cp -P "$entry" "$dev/$name"
  elif [[ -d $entry ]]; then
    mkdir "$dev/$name"
    mount --rbind "$entry" "$dev/$name"
  else
    : >"$dev/$name"
    mount --bind "$entry" "$dev/$name"
  fi
done
mount --move "$dev" /dev
rmdir "$dev"
[[ ! -e /dev/kvm ]] || die "/dev/kvm is still visible in the namespace"
echo "without-kvm: /dev/kvm hidden in this mount namespace" >&2
exec "$@"
