//go:build linux

package main

import (
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/torkbot/sandbox/bootparams"
)

// loopbackUp gives lo 127.0.0.1/8 and brings it up, over netlink as for
// eth0. (The kernel would add that address itself as lo comes up; saying
// it here keeps the guest's loopback from depending on that.)
func loopbackUp() error {
	lo, err := netlink.LinkByName("lo")
	if err != nil {
		return fmt.Errorf("lo: %w", err)
	}
	addr := &netlink.Addr{IPNet: prefixNet(netip.MustParsePrefix("127.0.0.1/8")), Scope: unix.RT_SCOPE_HOST}
	if err := netlink.AddrReplace(lo, addr); err != nil {
		return fmt.Errorf("lo: add address %s: %w", addr.IPNet, err)
	}
	if err := netlink.LinkSetUp(lo); err != nil {
		return fmt.Errorf("lo: set up: %w", err)
	}
	return nil
}

// ethernet is the guest's one NIC.
const ethernet = "eth0"

// configureNetwork gives eth0 its addresses, MTU and default routes and
// points the resolver at the sandbox's DNS, as the kernel command line says.
// The host's netstack answers ARP and NDP for the gateways.
func configureNetwork(cfg *bootparams.Net) error {
	link, err := waitForLink(ethernet, deviceWait)
	if err != nil {
		return err
	}
	if err := netlink.LinkSetMTU(link, cfg.MTU); err != nil {
		return fmt.Errorf("%s: set MTU %d: %w", ethernet, cfg.MTU, err)
	}
	addrs := []*netlink.Addr{{IPNet: prefixNet(cfg.IP4)}}
	if cfg.IP6.IsValid() {
		// No duplicate address detection: the link has one peer, ours, and
		// DAD would hold the address back for a second.
		addrs = append(addrs, &netlink.Addr{IPNet: prefixNet(cfg.IP6), Flags: unix.IFA_F_NODAD})
	}
	for _, a := range addrs {
		if err := netlink.AddrAdd(link, a); err != nil {
			return fmt.Errorf("%s: add address %s: %w", ethernet, a.IPNet, err)
		}
	}
	if err := netlink.LinkSetUp(link); err != nil {
		return fmt.Errorf("%s: set up: %w", ethernet, err)
	}
	for _, gw := range []netip.Addr{cfg.Gateway4, cfg.Gateway6} {
		if !gw.IsValid() {
			continue
		}
		route := &netlink.Route{LinkIndex: link.Attrs().Index, Gw: gw.AsSlice()}
		if err := netlink.RouteAdd(route); err != nil {
			return fmt.Errorf("%s: default route via %s: %w", ethernet, gw, err)
		}
	}
	return writeResolvConf(cfg.DNS)
}

// deviceWait bounds how long init waits for a device the VMM attached.
const deviceWait = 5 * time.Second

func waitForLink(name string, within time.Duration) (netlink.Link, error) {
	deadline := time.Now().Add(within)
	for {
		link, err := netlink.LinkByName(name)
		if err == nil {
			return link, nil
		}
		if time.Now().After(deadline) {
			return nil, fmt.Errorf("network interface %s did not appear within %v: %w", name, within, err)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func prefixNet(p netip.Prefix) *net.IPNet {
	return &net.IPNet{IP: p.Addr().AsSlice(), Mask: net.CIDRMask(p.Bits(), p.Addr().BitLen())}
}

// resolvConf is written under /run (a tmpfs) and bind-mounted over
// /etc/resolv.conf, which works on a read-only root as on a writable one.
const resolvConf = "/run/sandbox/resolv.conf"

func writeResolvConf(servers []netip.Addr) error {
	var b strings.Builder
	for _, s := range servers {
		fmt.Fprintf(&b, "nameserver %s\n", s)
	}
	if err := os.MkdirAll(filepath.Dir(resolvConf), 0o755); err != nil {
		return err
	}
	if err := os.WriteFile(resolvConf, []byte(b.String()), 0o644); err != nil {
		return err
	}
	if err := unix.Mount(resolvConf, "/etc/resolv.conf", "", unix.MS_BIND, ""); err != nil {
		return fmt.Errorf("bind %s over /etc/resolv.conf (the image must have that file): %w", resolvConf, err)
	}
	return nil
}
