//go:build !linux

package netpolicy

import (
	"net"
	"net/netip"
)

// isHostAddress reports whether a is one of the host's interface addresses,
// listed at the time of the question so that it is current however the
// interfaces change. A listing that fails answers true: refusing a flow is
// safer than reaching the host.
func isHostAddress(a netip.Addr) bool {
	addrs, err := net.InterfaceAddrs()
	if err != nil {
		return true
	}
	for _, ia := range addrs {
		if n, ok := ia.(*net.IPNet); ok {
			if h, ok := netip.AddrFromSlice(n.IP); ok && h.Unmap() == a.Unmap() {
				return true
			}
		}
	}
	return false
}
