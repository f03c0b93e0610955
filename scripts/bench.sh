#!/usr/bin/env bash
# npm run bench: builds what is missing, then prints the library's speed as
# ratios against a floor measured in the same run (bench/run.mjs).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
bash scripts/build.sh >&2
go build -o build/bench-floor ./bench/floor
exec node bench/run.mjs
