package netpolicy

import (
	"net"
	"net/netip"
	"os"
	"runtime"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// TestHostAddressesAreRefused gives a fresh network namespace (the test's
// own thread's) addresses as a host would have them, and checks that each is
// refused while it exists, and no longer once removed: the answer follows
// the interfaces as they change.
func TestHostAddressesAreRefused(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root for a network namespace")
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		// This thread enters a namespace of its own and is never given
		// back: the runtime ends it with this goroutine.
		runtime.LockOSThread()
		if err := unix.Unshare(unix.CLONE_NEWNET); err != nil {
			t.Errorf("unshare: %v", err)
			return
		}
		hostAddressesInFreshNamespace(t)
	}()
	<-done
}

func hostAddressesInFreshNamespace(t *testing.T) {
	nic := &netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: "eth9"}, PeerName: "eth9p"}
	if err := netlink.LinkAdd(nic); err != nil {
		t.Fatalf("add veth link: %v", err)
	}
	// Both ends up: IPv6 addresses wait for the link's carrier.
	for _, name := range []string{"eth9", "eth9p"} {
		l, err := netlink.LinkByName(name)
		if err == nil {
			err = netlink.LinkSetUp(l)
		}
		if err != nil {
			t.Fatalf("set %s up: %v", name, err)
		}
	}
	// The kernel sees the carrier a moment later (linkwatch), and
	// IPv6 addresses are not the host's until then.
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		l, err := netlink.LinkByName("eth9")
		if err == nil && l.Attrs().OperState == netlink.OperUp {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("eth9 not up after 5 s: %v", err)
		}
	}
	addr := func(cidr string) *netlink.Addr {
		a, err := netlink.ParseAddr(cidr)
		if err != nil {
			t.Fatal(err)
		}
		if a.IP.To4() == nil {
			a.Flags = unix.IFA_F_NODAD
		}
		return a
	}
	// A public address, a LAN address (with its network's broadcast) and
	// an IPv6 address.
	host := []string{"93.184.216.34/32", "192.168.7.2/24", "2001:db8:7::2/64"}
	for _, c := range host {
		if err := netlink.AddrAdd(nic, addr(c)); err != nil {
			t.Fatalf("add %s: %v", c, err)
		}
	}
	for _, c := range host {
		waitLocalTable(t, c, true)
	}
	for _, tc := range []struct {
		addr string
		want bool
	}{
		{"93.184.216.34", true},
		{"192.168.7.2", true},
		{"192.168.7.255", true}, // the LAN's broadcast
		{"2001:db8:7::2", true},
		{"64:ff9b::c0a8:702", true}, // NAT64 of 192.168.7.2
		{"192.168.7.3", false},      // a LAN neighbour
		{"2001:db8:7::3", false},
		{"198.51.100.10", false}, // no route at all: the dial fails; the policy may see it
		{"64:ff9b::c633:640a", false},
	} {
		if got := refused(netip.MustParseAddr(tc.addr)); got != tc.want {
			t.Errorf("with the host's addresses: refused(%s) = %v, want %v", tc.addr, got, tc.want)
		}
	}
	for _, c := range host {
		if err := netlink.AddrDel(nic, addr(c)); err != nil {
			t.Fatalf("delete %s: %v", c, err)
		}
	}
	for _, c := range host {
		waitLocalTable(t, c, false)
	}
	if err := netlink.AddrAdd(nic, addr("192.168.8.2/24")); err != nil {
		t.Fatal(err)
	}
	waitLocalTable(t, "192.168.8.2/24", true)
	for _, a := range []string{"93.184.216.34", "192.168.7.2", "2001:db8:7::2"} {
		if refused(netip.MustParseAddr(a)) {
			t.Errorf("refused(%s) after the address was removed", a)
		}
	}
	if !refused(netip.MustParseAddr("192.168.8.2")) {
		t.Error("an address added later is not refused")
	}
	if ip := net.ParseIP("192.168.8.2"); !isHostAddress(netip.AddrFrom4([4]byte(ip.To4()))) {
		t.Error("isHostAddress(192.168.8.2) = false")
	}
}

// waitLocalTable waits until the kernel's local routing table has (or no
// longer has) the address of cidr: the kernel installs it a moment after
// the address is added (IPv6 does it from a work queue, even without DAD).
func waitLocalTable(t *testing.T, cidr string, present bool) {
	p := netip.MustParsePrefix(cidr)
	filter := &netlink.Route{Table: unix.RT_TABLE_LOCAL}
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		routes, err := netlink.RouteListFiltered(netlink.FAMILY_ALL, filter, netlink.RT_FILTER_TABLE)
		if err != nil {
			t.Fatalf("list the local table: %v", err)
		}
		found := false
		for _, r := range routes {
			if r.Dst != nil {
				if a, ok := netip.AddrFromSlice(r.Dst.IP); ok && a.Unmap() == p.Addr() {
					found = true
				}
			}
		}
		if found == present {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s in the local table: %v after 5 s, want %v", p.Addr(), found, present)
		}
	}
}
