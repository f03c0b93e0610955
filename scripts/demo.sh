#!/usr/bin/env bash
# The main job: build what is missing, boot a sandbox on the built-in
# debian:13-slim image, run a command in it and print its output.
# Usage: scripts/demo.sh [command [args...]]
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
bash scripts/build.sh >&2
exec node examples/run-command.mjs "$@"
