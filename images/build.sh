#!/usr/bin/env bash
# images/build.sh NAME OUTDIR
#
# Builds the built-in image whose recipe is images/NAME/ into
#   OUTDIR/images/NAME.qcow2       ext4 (label sandbox-root), zstd-compressed qcow2
#   OUTDIR/images/NAME.facts.json  {name, file, sha256, sizeBytes,
#                                  virtualSizeBytes, tools}: what the image is
#   OUTDIR/images/catalog.json     {"<image name>": {file, format, sha256, ...}},
#                                  merged with the entries already there
# A recipe directory holds image.env (IMAGE_NAME, IMAGE_PLATFORM, IMAGE_ARCH,
# and IMAGE_FROM when recipe.sh uses another recipe directory's files) and
# recipe.sh ROOTDIR, which writes ROOTDIR/rootfs, ROOTDIR/meta.json (merged
# into the catalog entry), ROOTDIR/source-date-epoch and, optionally,
# ROOTDIR/tools.json (the facts' tools: {name: {package, version, command,
# reports}}).
# The finished image is cached by the hash of the recipe directory (and of
# IMAGE_FROM's), this script and mke2fs.conf; building one needs root
# (debootstrap), reusing it not.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
. "$here/../scripts/lib-cache.sh"

HEADROOM_MIB=256 # free space in the image beyond 25% of the tree's size

# apt_source_uri SUITE: the URI of the first enabled `deb` source of this
# machine's apt (one-line .list or deb822 .sources) that serves SUITE.
apt_source_uri() {
  local want=$1 f lists=() sources=() uri=
  for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list; do [[ -f $f ]] && lists+=("$f"); done
  for f in /etc/apt/sources.list.d/*.sources; do [[ -f $f ]] && sources+=("$f"); done
  if ((${#lists[@]})); then
    uri=$(awk -v want="$want" '
      $1 == "deb" {
        i = 2
        if ($2 ~ /^\[/) { while (i <= NF && $i !~ /\]$/) i++; i++ }   # [options]
        if ($(i + 1) == want) { print $i; exit }
      }' "${lists[@]}")
  fi
  if [[ -z $uri ]] && ((${#sources[@]})); then
    uri=$(awk -v want="$want" '
      function flush() {
        gsub(/[ \t]+/, " ", suites)
        if (!found && uri != "" && tolower(enabled) != "no" &&
            types ~ /(^|[ \t])deb([ \t]|$)/ && index(" " suites " ", " " want " ")) {
          print uri; found = 1
        }
        types = suites = uri = enabled = ""
      }
      FNR == 1 { flush() }
      /^[ \t]*#/ { next }
      /^[ \t]*$/ { flush(); next }
      /^[A-Za-z-]+:/ {
        key = tolower($1); sub(/:$/, "", key)
        v = $0; sub(/^[^:]*:[ \t]*/, "", v)
        if (key == "types") types = v
        else if (key == "suites") suites = v
        else if (key == "enabled") enabled = v
        else if (key == "uris") { split(v, a, /[ \t]+/); uri = a[1] }
      }
      END { flush() }' "${sources[@]}")
  fi
  printf '%s\n' "${uri%/}"
}

# Sets MIRROR and SECURITY_MIRROR to the Debian mirrors this machine's apt
# uses, found by the suite they serve: the host's own codename (which rules
# out -updates, -security and third-party repositories) and codename-security.
# SANDBOX_DEBIAN_MIRROR / SANDBOX_DEBIAN_SECURITY_MIRROR override them; no
# security mirror only leaves it out of the image's apt sources.
resolve_mirrors() {
  local codename=
  MIRROR=${SANDBOX_DEBIAN_MIRROR:-}
  SECURITY_MIRROR=${SANDBOX_DEBIAN_SECURITY_MIRROR:-}
  if grep -qxE 'ID="?debian"?' /etc/os-release 2>/dev/null; then
    codename=$(sed -n 's/^VERSION_CODENAME=//p' /etc/os-release | tr -d '"')
  fi
  if [[ -n $codename ]]; then
    [[ -n $MIRROR ]] || MIRROR=$(apt_source_uri "$codename")
    [[ -n $SECURITY_MIRROR ]] || SECURITY_MIRROR=$(apt_source_uri "$codename-security")
  fi
  [[ -n $MIRROR ]] ||
    die "found no Debian mirror in this machine's apt sources (no enabled 'deb' source for '${codename:-<not a Debian host>}'): set SANDBOX_DEBIAN_MIRROR to a Debian archive mirror URL"
  MIRROR=${MIRROR%/}
  SECURITY_MIRROR=${SECURITY_MIRROR%/}
}

# A UUID (RFC 4122 layout, version 4 bits) from the first 32 hex digits of a
# digest, so the file system's identity follows the recipe.
uuid_from_hex() {
  local h=$1
  printf '%s-%s-4%s-%x%s-%s\n' "${h:0:8}" "${h:8:4}" "${h:13:3}" \
    $((0x${h:16:1} & 0x3 | 0x8)) "${h:17:3}" "${h:20:12}"
}

# Size of the file system: what the tree occupies, 25% more for metadata and
# growth, plus fixed headroom; whole MiB.
fs_size_mib() {
  local used_mib
  used_mib=$(du -sx --block-size=1M "$1" | cut -f1)
  printf '%s\n' $((used_mib + (used_mib + 3) / 4 + HEADROOM_MIB))
}

# Runs a command with its output appended to the build log ($LOG), so a
# build is quiet; on failure shows the log's tail and where the log is.
logged() {
  "$@" >>"$LOG" 2>&1 || {
    tail -n 40 "$LOG" >&2
    die "$1 failed; full log: $LOG"
  }
}

# Makes the ext4 image of ROOTDIR/rootfs as reproducibly as e2fsprogs allows:
# UUID and directory hash seed from the cache key, root dir owned by 0:0, no
# host mke2fs.conf, timestamps clamped to the archive's date. mke2fs 1.47.0
# (Debian 12) reads the time from E2FSPROGS_FAKE_TIME; later ones honour
# SOURCE_DATE_EPOCH. Inode change times still come from the build.
make_ext4() {
  local work=$1 key=$2 raw=$3 epoch size_mib
  epoch=$(<"$work/source-date-epoch")
  find "$work/rootfs" -xdev -newermt "@$epoch" -print0 | xargs -0r touch -h -d "@$epoch"
  size_mib=$(fs_size_mib "$work/rootfs")
  truncate -s "${size_mib}M" "$raw"
  MKE2FS_CONFIG=$here/mke2fs.conf E2FSPROGS_FAKE_TIME=$epoch SOURCE_DATE_EPOCH=$epoch \
    logged mkfs.ext4 -q -t ext4 -L sandbox-root -m 0 \
    -U "$(uuid_from_hex "$key")" \
    -E "root_owner=0:0,hash_seed=$(uuid_from_hex "$(printf 'hash_seed %s' "$key" | sha256sum)")" \
    -d "$work/rootfs" "$raw"
  logged e2fsck -fn "$raw"
}

# cache_build callback: builds the entry (NAME.qcow2 + entry.json) in $1.
build_image() {
  local entry=$1 work=$1/work raw=$1/work/root.ext4 qcow sha vsize
  LOG=$entry/build.log
  ((EUID == 0)) ||
    die "building image $IMAGE_NAME needs root (debootstrap, chroot); run once as root, the result is cached under $(cache_root)"
  need_pkgs e2fsprogs qemu-utils
  mkdir -p "$work"
  resolve_mirrors
  SANDBOX_DEBIAN_MIRROR=$MIRROR SANDBOX_DEBIAN_SECURITY_MIRROR=$SECURITY_MIRROR \
    logged "$recipe_dir/recipe.sh" "$work"
  [[ -e $work/rootfs/bin/sh ]] || die "recipe $recipe_dir/recipe.sh made a tree without /bin/sh"
  make_ext4 "$work" "$CACHE_KEY" "$raw"
  qcow=$entry/$RECIPE_NAME.qcow2
  logged qemu-img convert -c -O qcow2 -o compression_type=zstd "$raw" "$qcow"
  sha=$(sha256sum <"$qcow" | cut -d' ' -f1)
  vsize=$(qemu-img info --output=json "$qcow" | jq '."virtual-size"')
  jq --arg file "$RECIPE_NAME.qcow2" --arg sha "$sha" --argjson vsize "$vsize" \
    --arg platform "$IMAGE_PLATFORM" --arg arch "$IMAGE_ARCH" \
    '{file: $file, format: "qcow2", sha256: $sha, virtualSizeBytes: $vsize,
      platform: $platform, arch: $arch} + .' "$work/meta.json" >"$entry/entry.json"
  [[ -f $work/tools.json ]] || echo '{}' >"$work/tools.json"
  jq --arg name "$IMAGE_NAME" --arg file "$RECIPE_NAME.qcow2" --arg sha "$sha" \
    --argjson size "$(stat -c %s "$qcow")" --argjson vsize "$vsize" \
    '{name: $name, file: $file, sha256: $sha, sizeBytes: $size, virtualSizeBytes: $vsize, tools: .}' \
    "$work/tools.json" >"$entry/$RECIPE_NAME.facts.json"
  rm -rf --one-file-system "$work"
}

# Adds/replaces this image's entry in OUTDIR/images/catalog.json, keeping the
# others; written to a temp file and renamed so readers never see half of it.
merge_catalog() {
  local catalog=$1 entry_json=$2 tmp
  tmp=$(mktemp "$catalog.XXXXXX")
  if [[ -s $catalog ]]; then
    jq --arg name "$IMAGE_NAME" --slurpfile e "$entry_json" '.[$name] = $e[0]' "$catalog" >"$tmp" || {
      rm -f "$tmp"
      die "cannot merge into $catalog: it is not a JSON object; fix or delete it"
    }
  else
    jq --arg name "$IMAGE_NAME" '{($name): .}' "$entry_json" >"$tmp"
  fi
  chmod 0644 "$tmp"
  mv "$tmp" "$catalog"
}

main() {
  (($# == 2)) || die "usage: images/build.sh NAME OUTDIR"
  RECIPE_NAME=$1
  local out=$2
  recipe_dir=$here/$RECIPE_NAME
  [[ -x $recipe_dir/recipe.sh && -f $recipe_dir/image.env ]] ||
    die "no image recipe $recipe_dir/{recipe.sh,image.env}"
  IMAGE_FROM= # only the recipe's image.env may set it
  . "$recipe_dir/image.env"
  local files
  mapfile -t files < <(find "$recipe_dir" ${IMAGE_FROM:+"$here/$IMAGE_FROM"} -maxdepth 1 -type f | LC_ALL=C sort)
  need_pkgs jq
  CACHE_KEY=$(cache_key "$here/build.sh" "$here/mke2fs.conf" "${files[@]}")
  cache_build "images/$RECIPE_NAME" "$CACHE_KEY" build_image
  mkdir -p "$out/images"
  link_or_copy "$CACHE_ENTRY/$RECIPE_NAME.qcow2" "$out/images/$RECIPE_NAME.qcow2"
  link_or_copy "$CACHE_ENTRY/$RECIPE_NAME.facts.json" "$out/images/$RECIPE_NAME.facts.json"
  merge_catalog "$out/images/catalog.json" "$CACHE_ENTRY/entry.json"
}

main "$@"
