#!/usr/bin/env bash
# images/debian-13-slim/recipe.sh OUTDIR
#
# Root tree of the built-in image debian:13-slim: Debian 13 (trixie) minbase
# with ca-certificates and curl, slimmed like Docker's debian *-slim images.
# Run by images/build.sh (as root), which turns the tree into the qcow2.
# Writes:
#   OUTDIR/rootfs/              the tree
#   OUTDIR/meta.json            provenance, merged into the catalog entry
#   OUTDIR/source-date-epoch    the archive's Release date, for timestamps
# Needs SANDBOX_DEBIAN_MIRROR and, optionally, SANDBOX_DEBIAN_SECURITY_MIRROR
# (images/build.sh derives both from this machine's apt sources).
# Sourced (by images/debian-13/recipe.sh, which starts from this tree), it
# only defines its steps.
set -euo pipefail

. "$(dirname "${BASH_SOURCE[0]}")/../../scripts/lib-cache.sh"

SUITE=trixie
ARCH=amd64 # the catalog's x64, whatever the build host is
VARIANT=minbase
INCLUDE=ca-certificates,curl
KEYRING=/usr/share/keyrings/debian-archive-keyring.gpg

# Bookworm can bootstrap trixie only with its point-release updates of these:
# debian-archive-keyring 2023.3+deb12u2 adds the trixie signing keys, and
# debootstrap 1.0.128+nmu2+deb12u2 stops pulling usr-is-merged into trixie.
need_version() {
  local pkg=$1 min=$2 have
  have=$(dpkg-query -W -f '${Version}' "$pkg")
  dpkg --compare-versions "$have" ge "$min" && return 0
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q --only-upgrade "$pkg" >&2 || true
  have=$(dpkg-query -W -f '${Version}' "$pkg")
  # Stale lists may not know the update yet: refresh them once, as root
  # (the rule of scripts/lib-apt.sh), and try again.
  if ! dpkg --compare-versions "$have" ge "$min" && ((EUID == 0)); then
    apt-get update -q >&2 || true
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q --only-upgrade "$pkg" >&2 || true
    have=$(dpkg-query -W -f '${Version}' "$pkg")
  fi
  dpkg --compare-versions "$have" ge "$min" ||
    die "$pkg $have is too old to bootstrap $SUITE (need >= $min, from bookworm's point releases): apt-get update && apt-get install $pkg"
}

bootstrap() {
  local root=$1 mirror=${SANDBOX_DEBIAN_MIRROR:?SANDBOX_DEBIAN_MIRROR must name a Debian archive mirror}
  need_pkgs debootstrap debian-archive-keyring jq
  need_version debian-archive-keyring 2023.3+deb12u2
  need_version debootstrap 1.0.128+nmu2+deb12u2
  debootstrap --arch="$ARCH" --variant="$VARIANT" --include="$INCLUDE" --keyring="$KEYRING" \
    "$SUITE" "$root" "$mirror"
}

# What the image was built from: the suite's Release as debootstrap fetched
# it (read before the apt lists are removed).
write_provenance() {
  local root=$1 out=$2 built_at=$3 release rel_version rel_date epoch
  release=$(printf '%s\n' "$root"/var/lib/apt/lists/*_dists_"${SUITE}"_Release)
  [[ -f $release ]] || die "debootstrap left no Release file of $SUITE in $root/var/lib/apt/lists"
  rel_version=$(sed -n 's/^Version: //p' "$release")
  rel_date=$(sed -n 's/^Date: //p' "$release")
  epoch=$(date -u -d "$rel_date" +%s)
  printf '%s\n' "$epoch" >"$out/source-date-epoch"
  jq -n --arg suite "$SUITE" --arg variant "$VARIANT" --arg packages "$INCLUDE" \
    --arg version "$rel_version" --arg date "$(date -u -d "@$epoch" +%FT%TZ)" \
    --arg built "$built_at" \
    '{debootstrap: {suite: $suite, variant: $variant, "include": ($packages | split(",")),
                    release: $version, releaseDate: $date},
      builtAt: $built}' >"$out/meta.json"
}

# Like Docker's debian slim variants: no docs (but copyrights), man pages,
# info or translations, now and for packages installed later in the guest.
slim() {
  local root=$1
  cat >"$root/etc/dpkg/dpkg.cfg.d/sandbox-slim" <<'EOF'
# Built-in sandbox image: keep it small (like Docker's *-slim images).
path-exclude /usr/share/doc/*
path-include /usr/share/doc/*/copyright
path-exclude /usr/share/man/*
path-exclude /usr/share/groff/*
path-exclude /usr/share/info/*
path-exclude /usr/share/lintian/*
path-exclude /usr/share/locale/*
EOF
  find "$root/usr/share/doc" -mindepth 1 ! -type d ! -name copyright -delete
  find "$root/usr/share/doc" -mindepth 1 -type d -empty -delete
  rm -rf "$root"/usr/share/{man,groff,info,lintian,locale}/*
}

# The guest's apt sources: the mirrors the image was built from, in deb822
# form, with -updates and (when known) -security like Debian's own images.
write_apt_sources() {
  local root=$1 keyring=/usr/share/keyrings/debian-archive-keyring.pgp
  [[ -f $root$keyring ]] || die "the $SUITE tree has no $keyring for its apt sources"
  rm -f "$root/etc/apt/sources.list"
  {
    printf 'Types: deb\nURIs: %s\nSuites: %s %s-updates\nComponents: main\nSigned-By: %s\n' \
      "$SANDBOX_DEBIAN_MIRROR" "$SUITE" "$SUITE" "$keyring"
    if [[ -n ${SANDBOX_DEBIAN_SECURITY_MIRROR:-} ]]; then
      printf '\nTypes: deb\nURIs: %s\nSuites: %s-security\nComponents: main\nSigned-By: %s\n' \
        "$SANDBOX_DEBIAN_SECURITY_MIRROR" "$SUITE" "$keyring"
    else
      echo "no security mirror known: the image's apt sources leave out $SUITE-security" >&2
    fi
  } >"$root/etc/apt/sources.list.d/debian.sources"
}

# The guest's init sets the hostname and writes resolv.conf at boot; the
# files must exist (a read-only root can only have them bind-mounted over).
configure() {
  local root=$1
  printf 'sandbox\n' >"$root/etc/hostname"
  printf '127.0.0.1\tlocalhost\n127.0.1.1\tsandbox\n::1\t\tlocalhost ip6-localhost ip6-loopback\nff02::1\t\tip6-allnodes\nff02::2\t\tip6-allrouters\n' \
    >"$root/etc/hosts"
  : >"$root/etc/resolv.conf" # debootstrap copied the build host's
  : >"$root/etc/machine-id"  # empty: no id baked in and shared by every sandbox
  chmod 0644 "$root"/etc/{hostname,hosts,resolv.conf,machine-id}
  mkdir -p "$root/workspace" "$root/mnt" "$root/tmp"
  chmod 0755 "$root/workspace" "$root/mnt"
  chmod 1777 "$root/tmp"
}

clean() {
  local root=$1
  rm -rf "$root"/var/lib/apt/lists/* "$root"/var/cache/apt/*.bin \
    "$root"/var/cache/apt/archives/*.deb "$root"/var/cache/apt/archives/partial/* \
    "$root"/var/log/bootstrap.log "$root"/var/log/dpkg.log \
    "$root"/var/log/alternatives.log "$root"/var/log/apt/* \
    "$root"/var/cache/debconf/*-old "$root"/var/lib/dpkg/*-old \
    "$root/debootstrap"
}

main() {
  (($# == 1)) || die "usage: images/debian-13-slim/recipe.sh OUTDIR"
  local out=$1 root=$1/rootfs built_at
  built_at=$(date -u +%FT%TZ)
  bootstrap "$root"
  write_provenance "$root" "$out" "$built_at"
  slim "$root"
  write_apt_sources "$root"
  configure "$root"
  clean "$root"
}

[[ ${BASH_SOURCE[0]} != "$0" ]] || main "$@"
