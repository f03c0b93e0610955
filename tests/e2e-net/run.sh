#!/usr/bin/env bash
# Runs the network e2e suite (or the files given) inside the namespaces
# in-netns.sh makes: only there can the tests reach their origins, and
# nothing else.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
exec bash tests/e2e-net/in-netns.sh node --test --test-concurrency=1 "${@:-tests/e2e-net/}"
