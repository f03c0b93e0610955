#!/usr/bin/env bash
# Builds the S3 server the @torkbot/sandbox/s3 tests run on loopback:
# versitygw (Apache-2.0, github.com/versity/versitygw), an S3 gateway whose
# posix backend keeps objects as files and honours conditional writes
# (If-None-Match / If-Match on PUT), from the Go module proxy, cached under
# $(cache_root)/versitygw/<key>/. Prints the binary's path.
#   SANDBOX_TEST_S3_SERVER=$(bash scripts/build-s3-server.sh) node --test tests/e2e/s3-block-store.test.mjs
set -euo pipefail
. "$(dirname "${BASH_SOURCE[0]}")/lib-cache.sh"
VERSION=v1.8.0
command -v go >/dev/null || die "go is needed to build versitygw $VERSION (Go 1.26, see README)"

build() {
  local out=$1
  # A module-aware build outside any module: the proxy serves the source.
  (cd "$out" && GOBIN="$out" GOFLAGS=-trimpath CGO_ENABLED=0 go install "github.com/versity/versitygw/cmd/versitygw@$VERSION") >&2 ||
    die "go install github.com/versity/versitygw/cmd/versitygw@$VERSION failed"
}
cache_build versitygw "$(cache_key "${BASH_SOURCE[0]}" -- "$VERSION" "$(go env GOVERSION)")" build
printf '%s\n' "$CACHE_ENTRY/versitygw"
