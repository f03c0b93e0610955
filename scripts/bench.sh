#!/usr/bin/env bash
# npm run bench: builds what is missing, then prints the library's speed as
# ratios against floors measured in the same run (bench/run.mjs), then the
# network's against slirp4netns (bench/net).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
bash scripts/build.sh >&2
go build -o build/bench-floor ./bench/floor
go build -o build/bench-virtiofs ./bench/virtiofs
go build -o build/bench-disk ./bench/disk
# The kernel floor: Debian's kernel beside ours (kernel/distro.sh, cached),
# and an initrd whose init writes one line and resets (bench/kernelfloor).
bash kernel/distro.sh build/distro-kernel >&2
go build -o build/bench-kernelfloor ./bench/kernelfloor
CGO_ENABLED=0 go build -trimpath -ldflags='-s -w' -o build/kernelfloor-init ./bench/kernelfloor/init
bash kernel/mkinitrd.sh build/kernelfloor-init build/kernelfloor.cpio
node bench/run.mjs

# Network figures (bench/net): netpolicy vs slirp4netns (baseline) and pasta,
# plus gvproxy when it builds from the Go module proxy into a temp dir (never
# kept). The bench prints its own table and why a contender was skipped.
echo
if [ "$(id -u)" -eq 0 ] && { ! command -v slirp4netns || ! command -v pasta; } >/dev/null; then
  DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends slirp4netns passt >&2 ||
    echo "apt-get could not install slirp4netns/passt; bench/net skips what is missing" >&2
fi
go build -o build/bench-net ./bench/net
gvtmp=$(mktemp -d)
trap 'rm -rf "$gvtmp"' EXIT
gvargs=()
if (cd "$gvtmp" && GOBIN="$gvtmp" timeout 180 go install github.com/containers/gvisor-tap-vsock/cmd/gvproxy@v0.8.9) >"$gvtmp/build.log" 2>&1; then
  gvargs=(-gvproxy "$gvtmp/gvproxy")
else
  gvargs=(-gvproxy-skip "go install gvproxy@v0.8.9 failed: $(tail -n 1 "$gvtmp/build.log")")
fi
build/bench-net "${gvargs[@]}"

# HTTP interception vs raw accept() of the same flows (bench/http.mjs), in a
# network namespace of its own whose only origin is on loopback.
SANDBOX_NETNS_INSIDE=1 unshare --net -- bash -c \
  'ip link set lo up && ip addr add 198.51.100.10/32 dev lo && exec node bench/http.mjs'
