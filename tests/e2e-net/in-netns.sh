#!/usr/bin/env bash
# Runs the network e2e suite inside a fresh network namespace of its own
# (TESTING.md): only loopback exists, holding the origins' addresses, and
# there is no route off this machine, so no test can send traffic anywhere
# else even if it is wrong.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
if [[ ${SANDBOX_NETNS_INSIDE:-} != 1 ]]; then
  exec env SANDBOX_NETNS_INSIDE=1 unshare --net --mount -- "$0" "$@"
fi
# The host's own resolution (a DNS grant naming no resolver) honours
# /etc/hosts: this namespace's copy names one test host (network.test.mjs),
# and its resolv.conf names the tests' own resolver address, so the host's
# resolution never looks for the machine's real nameservers.
hosts=$(mktemp)
resolv=$(mktemp)
trap 'rm -f "$hosts" "$resolv"' EXIT
{ cat /etc/hosts; echo "198.51.100.10 hosts-file.test"; } >"$hosts"
echo "nameserver 192.0.2.53" >"$resolv"
mount --bind "$hosts" /etc/hosts
mount --bind "$resolv" /etc/resolv.conf
ip link set lo up
for addr in 198.51.100.10/32 198.51.100.11/32 203.0.113.10/32 192.0.2.53/32; do ip addr add "$addr" dev lo; done
ip -6 addr add 2001:db8::10/128 dev lo nodad
node --test --test-concurrency=1 "${@:-tests/e2e-net/}"
