#!/usr/bin/env bash
# Runs every test: Go unit tests (with the race detector) and short fuzz runs,
# TypeScript unit tests, then end-to-end tests that boot real VMs through the
# public API. Builds what is missing first.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
. scripts/lib-cache.sh
bash scripts/build.sh
# Test-only tools: namespaces, real clients and servers the tests drive
# (the Go tests would install a missing one themselves, or skip naming it).
need_pkgs iproute2 util-linux dnsmasq-base curl dnsutils netcat-openbsd socat \
  openssh-client openssh-server openssl sqlite3 git attr

echo "==> go vet"
go vet ./...
echo "==> go test -race"
go test -race -count=1 ./...

echo "==> fuzz (short runs; long ones: go test -fuzz=NAME -fuzztime=10m ./PKG)"
while read -r pkg target; do
  go test -run='^$' -fuzz="^${target}\$" -fuzztime="${FUZZTIME:-10s}" "$pkg"
done < <(grep -rl --include='*_test.go' '^func Fuzz' . | sort | while read -r f; do
  grep -o '^func Fuzz[A-Za-z0-9_]*' "$f" | sed "s|^func ||; s|^|./$(dirname "${f#./}") |"
done)

echo "==> TypeScript unit tests"
npx tsc -p tests/tsconfig.json
node --test build/tests/unit/

echo "==> end-to-end tests (real VMs)"
# One file at a time: each boots VMs, and the machines have two cores.
node --test --test-concurrency=1 tests/e2e/

echo "==> network end-to-end tests (real VMs, in a network namespace of their own)"
bash tests/e2e-net/run.sh
