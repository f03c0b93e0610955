#!/usr/bin/env bash
# npm run bench: builds what is missing, then prints the library's speed as
# ratios against floors measured in the same run (bench/run.mjs), then the
# network's against slirp4netns (bench/net), then every promise of
# SPECIFICATION.md next to this run's ratios, saying which hold
# (bench/promises.mjs).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
bash scripts/build.sh >&2
BENCH_RESULTS=$(mktemp)
export BENCH_RESULTS
trap 'rm -f "$BENCH_RESULTS"' EXIT
go build -o build/bench-floor ./bench/floor
go build -o build/bench-virtiofs ./bench/virtiofs
go build -o build/bench-disk ./bench/disk
# The S3 block store row runs against versitygw on loopback (built once
# into the cache); without it, bench/run.mjs says why it skipped the row.
SANDBOX_TEST_S3_SERVER=$(bash scripts/build-s3-server.sh) || SANDBOX_TEST_S3_SERVER=
export SANDBOX_TEST_S3_SERVER
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
trap 'rm -rf "$gvtmp" "$BENCH_RESULTS"' EXIT
gvargs=()
if (cd "$gvtmp" && GOBIN="$gvtmp" timeout 180 go install github.com/containers/gvisor-tap-vsock/cmd/gvproxy@v0.8.9) >"$gvtmp/build.log" 2>&1; then
  gvargs=(-gvproxy "$gvtmp/gvproxy")
else
  gvargs=(-gvproxy-skip "go install gvproxy@v0.8.9 failed: $(tail -n 1 "$gvtmp/build.log")")
fi
build/bench-net -results "$BENCH_RESULTS" "${gvargs[@]}"

# HTTP interception vs raw accept() of the same flows (bench/http.mjs), in
# the network e2e suite's namespaces: its origin lives one veth hop away.
bash tests/e2e-net/in-netns.sh node bench/http.mjs

node bench/promises.mjs "$BENCH_RESULTS"
