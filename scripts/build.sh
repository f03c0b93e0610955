#!/usr/bin/env bash
# Builds everything a sandbox needs, into the current platform's package
# folder (platform-packages/<platform>/), reusing what is already built:
# npm dependencies, the TypeScript API (dist/), the addon (sandbox.node),
# sandbox-init, the guest kernel and initrd, and the built-in images.
# Slow outputs (kernel, images) are cached by recipe hash; see docs/artifacts.md.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
. scripts/lib-cache.sh

platform=linux-x64-gnu
[[ $(uname -s)/$(uname -m) == Linux/x86_64 ]] ||
  die "building on $(uname -s)/$(uname -m) is not supported yet; this build makes the $platform package"
pkg=platform-packages/$platform

step() { printf '==> %s\n' "$*"; }

# Build tools and the QEMU engine the runtime uses.
need_pkgs gcc qemu-system-x86 qemu-utils debootstrap cpio e2fsprogs zstd xz-utils binutils jq
command -v go >/dev/null || die "Go is not on PATH; install Go 1.26 (https://go.dev/dl) and retry"
command -v npm >/dev/null || die "npm is not on PATH; install Node.js 20 or newer"

if [[ ! -f node_modules/.package-lock.json || package-lock.json -nt node_modules/.package-lock.json ]]; then
  step "npm dependencies"
  npm ci --no-audit --no-fund --loglevel=error
fi

step "TypeScript API → dist/"
npx tsc -p tsconfig.json

version=$(node -p 'require("./package.json").version')
mkdir -p build "$pkg"
step "sandbox-init (static Go)"
CGO_ENABLED=0 go build -trimpath -ldflags='-s -w' -o build/sandbox-init ./sandbox-init

step "addon → $pkg/sandbox.node"
# -buildmode=c-shared also writes a C header we do not need.
go build -trimpath -buildmode=c-shared -ldflags="-s -w -X main.packageVersion=$version" -o build/sandbox.node ./native
install -m 0755 build/sandbox.node "$pkg/sandbox.node"

step "libkrun helper → $pkg/sandbox-krun"
# cgo: it dlopen()s libkrun at run time, so libkrun is not needed to build
# it (vmm/krun; on macOS this is the binary setup-macos signs).
CGO_ENABLED=1 go build -trimpath -ldflags='-s -w' -o build/sandbox-krun ./vmm/krun/cmd/sandbox-krun
install -m 0755 build/sandbox-krun "$pkg/sandbox-krun"

bash scripts/build-guest.sh build/sandbox-init "$pkg"

# The runtime finds artifacts only as an installed user would, through
# node_modules/@torkbot/sandbox-<platform>; materialise it (scripts/link-current.mjs).
node scripts/link-current.mjs
