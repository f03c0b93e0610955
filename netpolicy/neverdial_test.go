package netpolicy

import (
	"net/netip"
	"testing"
)

func TestNeverDial(t *testing.T) {
	for _, tc := range []struct {
		addr string
		want bool
	}{
		{"127.0.0.1", true},
		{"127.1.2.3", true},
		{"::1", true},
		{"::ffff:127.0.0.1", true},
		{"::ffff:198.51.100.10", true},
		{"0.0.0.0", true},
		{"0.1.2.3", true},
		{"::", true},
		{"255.255.255.255", true},
		{"10.0.2.255", true},
		{"224.0.0.251", true},
		{"ff02::fb", true},
		{"198.51.100.10", false},
		{"10.0.2.3", false},
		{"2001:db8::10", false},
		{"169.254.169.254", false}, // left to the policy (isLinkLocal)
		// NAT64 (64:ff9b::/96) by the IPv4 address it embeds.
		{"64:ff9b::7f00:1", true},     // 127.0.0.1
		{"64:ff9b::a00:2ff", true},    // 10.0.2.255
		{"64:ff9b::ffff:ffff", true},  // 255.255.255.255
		{"64:ff9b::e000:fb", true},    // 224.0.0.251
		{"64:ff9b::0.1.2.3", true},    // 0.1.2.3
		{"64:ff9b::c633:640a", false}, // 198.51.100.10
		{"64:ff9b:1::7f00:1", false},  // local-use NAT64 prefix: left to the policy (reserved)
	} {
		if got := neverDial(netip.MustParseAddr(tc.addr)); got != tc.want {
			t.Errorf("neverDial(%s) = %v, want %v", tc.addr, got, tc.want)
		}
	}
}
