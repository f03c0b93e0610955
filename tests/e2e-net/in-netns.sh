#!/usr/bin/env bash
# Runs a command (run.sh: the network e2e suite; scripts/bench.sh: the HTTP
# bench) inside a fresh network namespace of its own (TESTING.md), with no
# route off this machine, so nothing it runs can send traffic anywhere else
# even if it is wrong. The origins' addresses live in a second
# namespace ($SANDBOX_E2E_ORIGINS_NETNS, see origins.mjs), one veth hop away:
# the sandbox refuses the test namespace's own addresses, which play the
# host's (a LAN address 10.255.0.1, a public one 93.184.216.34, fd99::1 and
# the resolver's 192.0.2.53 on lo).
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
ip addr add 192.0.2.53/32 dev lo
# The origins' namespace, named in a /run/netns private to this mount
# namespace.
mkdir -p /run/netns
mount -t tmpfs -o size=1m netns /run/netns
export SANDBOX_E2E_ORIGINS_NETNS=origins
ip netns add origins
ip link add up0 type veth peer name up1 netns origins
ip link set up0 up
ip addr add 10.255.0.1/30 dev up0
ip addr add 93.184.216.34/32 dev up0
ip -6 addr add fd99::1/64 dev up0 nodad
in_origins() { ip netns exec origins "$@"; }
in_origins ip link set lo up
in_origins ip link set up1 up
in_origins ip addr add 10.255.0.2/30 dev up1
in_origins ip -6 addr add fd99::2/64 dev up1 nodad
for addr in 198.51.100.10/32 198.51.100.11/32 203.0.113.10/32; do in_origins ip addr add "$addr" dev lo; done
in_origins ip -6 addr add 2001:db8::10/128 dev lo nodad
# The cloud metadata service's address, for the matchHttp default.
in_origins ip addr add 169.254.169.254/32 dev lo
ip route add 169.254.169.254/32 via 10.255.0.2
ip route add 198.51.100.0/24 via 10.255.0.2
ip route add 203.0.113.0/24 via 10.255.0.2
ip -6 route add 2001:db8::/32 via fd99::2 dev up0 onlink
"$@"
