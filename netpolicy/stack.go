// Package netpolicy is the sandbox's network: a gVisor netstack attached to
// the guest's NIC through a framed stream (see package link), which
// terminates every guest connection and relays it upstream only after a
// Policy grants it.
//
// # Addressing
//
// The guest lives in GuestSubnetIPv4 (10.0.2.0/24, guest 10.0.2.2 by
// convention) and GuestSubnetIPv6 (the ULA fd00:5a4e:6c00::/64, guest ::2 by
// convention). The stack owns the gateways GatewayIPv4 (10.0.2.1) and
// GatewayIPv6 (fd00:5a4e:6c00::1): it answers ARP and NDP for them, and
// they are also the sandbox resolver on port 53 (UDP and TCP). The NIC is
// promiscuous and spoofing, so a packet to any destination is intercepted.
// The guest's own address is not configured anywhere: any source works.
//
// # Flows
//
// Each new TCP connection is decided on its SYN: the guest's handshake
// completes only after the policy granted it and the upstream dial
// succeeded; otherwise the guest gets a reset. A connection accepted with
// AcceptHTTP completes its handshake at once and is served by Config.HTTP
// (package httpproxy), which dials upstream per request: an unreachable
// upstream is then the guest's 502. Each new UDP flow (by
// 5-tuple) is decided on its first datagram and lives until it was idle
// for Config.UDPIdleTimeout; a denied flow's datagrams are dropped for the
// same lifetime (the policy is not asked again). Each DNS query to a
// gateway is decided by itself.
//
// Before any policy is asked, destinations that would reach the host
// itself or make no sense as a unicast peer are refused: loopback
// (127.0.0.0/8, ::1), unspecified (0.0.0.0/8, ::, which the host's kernel
// routes to itself), IPv4-mapped IPv6, multicast and broadcast, and any
// address the host's kernel would deliver to the host itself (its
// interface addresses, public, LAN or docker0 alike, and its broadcast and
// anycast addresses; see isHostAddress). A NAT64 address (64:ff9b::/96) is
// refused when the IPv4 address it embeds would be. Other gateway ports
// than 53 are refused too. Services the host binds to 0.0.0.0 are thereby
// out of reach whatever the policy allows, as loopback ones are.
//
// # Bounds
//
// The guest is hostile and one process hosts every sandbox, so what a guest
// can make the host hold is bounded per Serve (docs/security.md lists each
// bound with its test): UDP flows alive (maxUDPFlows, 256; datagrams that
// would start more are dropped, and datagrams to refused destinations and
// to the gateways' closed ports make no flow at all), policy calls in
// flight (maxPolicyCalls, 64; more wait), DNS-over-TCP connections
// (maxDNSTCPConns, 16; more are reset), DNS queries over UDP being resolved
// (maxDNSQueries, 64; more are dropped). Every TCP connection to the guest
// writes through a bounded, coalescing buffer (guestwrite.go), so a guest
// that stops reading holds the upstream back instead of growing the host.
//
// # Lifecycle
//
// New allocates and starts nothing. Serve builds a netstack, serves one
// framed link until its context ends or the link closes, then tears the
// netstack down and waits for every goroutine it started. DNS pins live in
// the Stack and survive across Serve calls. Close ends a running Serve and
// makes later ones fail.
package netpolicy

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"sync"
	"time"

	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/header"
	"gvisor.dev/gvisor/pkg/tcpip/network/arp"
	"gvisor.dev/gvisor/pkg/tcpip/network/ipv4"
	"gvisor.dev/gvisor/pkg/tcpip/network/ipv6"
	"gvisor.dev/gvisor/pkg/tcpip/stack"
	"gvisor.dev/gvisor/pkg/tcpip/transport/tcp"
	"gvisor.dev/gvisor/pkg/tcpip/transport/udp"

	"github.com/torkbot/sandbox/netpolicy/dns"
	"github.com/torkbot/sandbox/netpolicy/httpproxy"
	"github.com/torkbot/sandbox/netpolicy/link"
)

// Addressing of the sandbox network. See the package documentation.
var (
	GuestSubnetIPv4 = netip.MustParsePrefix("10.0.2.0/24")
	GatewayIPv4     = netip.MustParseAddr("10.0.2.1")
	GuestIPv4       = netip.MustParseAddr("10.0.2.2")

	GuestSubnetIPv6 = netip.MustParsePrefix("fd00:5a4e:6c00::/64")
	GatewayIPv6     = netip.MustParseAddr("fd00:5a4e:6c00::1")
	GuestIPv6       = netip.MustParseAddr("fd00:5a4e:6c00::2")

	// GatewayMAC is the stack's link address (locally administered).
	GatewayMAC = tcpip.LinkAddress("\x5a\x4e\x6c\x00\x00\x01")
)

const (
	// DefaultMTU suits virtio-net over a stream (its maximum).
	DefaultMTU = 65520
	// DefaultUDPIdleTimeout ends a UDP flow idle in both directions.
	DefaultUDPIdleTimeout = 60 * time.Second
	// DefaultDialTimeout bounds one upstream TCP dial.
	DefaultDialTimeout = 30 * time.Second

	// nicID is the netstack's only NIC.
	nicID tcpip.NICID = 1
	// maxInFlightSYN bounds TCP connections awaiting a decision or a dial.
	maxInFlightSYN = 512
)

var (
	// ErrClosed is returned by Serve after Close.
	ErrClosed = errors.New("netpolicy: stack closed")
	// ErrServing is returned by Serve while another Serve runs.
	ErrServing = errors.New("netpolicy: already serving")
)

// Config configures a Stack. Only Policy is required.
type Config struct {
	// Policy decides every flow.
	Policy Policy
	// Dialer dials upstream; nil means a zero net.Dialer.
	Dialer Dialer
	// MTU is the NIC's IP MTU; 0 means DefaultMTU. The guest must use the
	// same (1500 for a standard Ethernet guest).
	MTU uint32
	// HostLookup answers the queries of AcceptDNS decisions that name no
	// resolver, as the host's own programs would resolve the name
	// (dns.AnswerFromHost); nil means dns.SystemLookup.
	HostLookup dns.LookupFunc
	// UDPIdleTimeout is 0 for DefaultUDPIdleTimeout.
	UDPIdleTimeout time.Duration
	// DialTimeout is 0 for DefaultDialTimeout.
	DialTimeout time.Duration
	// HTTP intercepts the flows a policy accepts with AcceptHTTP; it should
	// dial upstream through Dialer. Nil makes AcceptHTTP deny.
	HTTP *httpproxy.Proxy
}

// Stack is one sandbox's network. It is safe for concurrent use.
type Stack struct {
	cfg  Config
	pins *dns.Pins

	// mu guards the fields below.
	mu     sync.Mutex
	closed bool
	// cancel ends the running Serve; nil when none runs.
	cancel context.CancelFunc
	// done is closed when the running Serve has returned.
	done chan struct{}
}

// New validates cfg and returns a Stack. It starts no goroutine.
func New(cfg Config) (*Stack, error) {
	if cfg.Policy == nil {
		return nil, errors.New("netpolicy: Config.Policy is nil")
	}
	if cfg.Dialer == nil {
		cfg.Dialer = &net.Dialer{}
	}
	if cfg.MTU == 0 {
		cfg.MTU = DefaultMTU
	}
	if cfg.MTU < header.IPv6MinimumMTU || cfg.MTU > DefaultMTU {
		return nil, fmt.Errorf("netpolicy: MTU %d out of range [%d, %d]", cfg.MTU, header.IPv6MinimumMTU, DefaultMTU)
	}
	if cfg.HostLookup == nil {
		cfg.HostLookup = dns.SystemLookup
	}
	if cfg.UDPIdleTimeout <= 0 {
		cfg.UDPIdleTimeout = DefaultUDPIdleTimeout
	}
	if cfg.DialTimeout <= 0 {
		cfg.DialTimeout = DefaultDialTimeout
	}
	return &Stack{cfg: cfg, pins: dns.NewPins(nil)}, nil
}

// Hostname returns the name the sandbox resolver pinned to a, or "".
func (s *Stack) Hostname(a netip.Addr) string { return s.pins.Lookup(a) }

// Serve runs the network over conn, a framed stream to the guest's NIC (see
// package link), until ctx ends, conn closes or fails, or Close is called.
// It takes ownership of conn and closes it. When it returns, every
// connection of this link is closed and every goroutine it started has
// exited. It returns nil when the peer closed the stream or Close was
// called, ctx.Err() when ctx ended, and the link's error otherwise.
func (s *Stack) Serve(ctx context.Context, conn io.ReadWriteCloser) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	s.mu.Lock()
	switch {
	case s.closed:
		s.mu.Unlock()
		conn.Close()
		return ErrClosed
	case s.cancel != nil:
		s.mu.Unlock()
		conn.Close()
		return ErrServing
	}
	s.cancel = cancel
	done := make(chan struct{})
	s.done = done
	s.mu.Unlock()
	defer func() {
		s.mu.Lock()
		s.cancel = nil
		s.done = nil
		s.mu.Unlock()
		close(done)
	}()

	ep, err := link.New(link.Options{MTU: s.cfg.MTU, LinkAddress: GatewayMAC})
	if err != nil {
		conn.Close()
		return fmt.Errorf("netpolicy: cannot create link: %w", err)
	}
	ns, err := newNetstack(ep)
	if err != nil {
		conn.Close()
		return err
	}
	sess := &session{Stack: s, ctx: ctx, ns: ns}
	defer sess.shutdown(cancel)
	if err := sess.start(); err != nil {
		conn.Close()
		return err
	}
	err = ep.Serve(ctx, conn)
	if errors.Is(err, context.Canceled) && ctx.Err() != nil {
		// Close, or the caller's ctx: report the caller's view.
		s.mu.Lock()
		closed := s.closed
		s.mu.Unlock()
		if closed {
			return nil
		}
	}
	return err
}

// Close ends a running Serve, waits for it to return, and makes later
// Serve calls fail with ErrClosed.
func (s *Stack) Close() error {
	s.mu.Lock()
	s.closed = true
	cancel, done := s.cancel, s.done
	s.mu.Unlock()
	if cancel != nil {
		cancel()
		<-done
	}
	return nil
}

// newNetstack returns a netstack with ep as its only NIC, owning both
// gateways, promiscuous and spoofing.
func newNetstack(ep stack.LinkEndpoint) (*stack.Stack, error) {
	ns := stack.New(stack.Options{
		NetworkProtocols:   []stack.NetworkProtocolFactory{ipv4.NewProtocol, ipv6.NewProtocol, arp.NewProtocol},
		TransportProtocols: []stack.TransportProtocolFactory{tcp.NewProtocol, udp.NewProtocol},
	})
	fail := func(what string, err tcpip.Error) (*stack.Stack, error) {
		ns.Destroy()
		return nil, fmt.Errorf("netpolicy: cannot %s: %s", what, err)
	}
	sack := tcpip.TCPSACKEnabled(true)
	if err := ns.SetTransportProtocolOption(tcp.ProtocolNumber, &sack); err != nil {
		return fail("enable SACK", err)
	}
	if err := ns.CreateNIC(nicID, ep); err != nil {
		return fail("create NIC", err)
	}
	if err := ns.SetPromiscuousMode(nicID, true); err != nil {
		return fail("set promiscuous mode", err)
	}
	if err := ns.SetSpoofing(nicID, true); err != nil {
		return fail("set spoofing", err)
	}
	for _, a := range []struct {
		proto tcpip.NetworkProtocolNumber
		addr  netip.Addr
		sub   netip.Prefix
	}{
		{ipv4.ProtocolNumber, GatewayIPv4, GuestSubnetIPv4},
		{ipv6.ProtocolNumber, GatewayIPv6, GuestSubnetIPv6},
	} {
		pa := tcpip.ProtocolAddress{
			Protocol: a.proto,
			AddressWithPrefix: tcpip.AddressWithPrefix{
				Address:   tcpip.AddrFromSlice(a.addr.AsSlice()),
				PrefixLen: a.sub.Bits(),
			},
		}
		if err := ns.AddProtocolAddress(nicID, pa, stack.AddressProperties{}); err != nil {
			return fail("add address "+a.addr.String(), err)
		}
	}
	// Everything goes out of the one NIC: replies to any (spoofed) peer.
	ns.SetRouteTable([]tcpip.Route{
		{Destination: header.IPv4EmptySubnet, NIC: nicID},
		{Destination: header.IPv6EmptySubnet, NIC: nicID},
	})
	return ns, nil
}

// neverDial reports whether a guest destination is refused before any
// policy is asked, by its address alone (refused also checks the host's
// addresses). See the package documentation.
func neverDial(a netip.Addr) bool {
	if a.Is4In6() {
		return true
	}
	if v4, ok := nat64Embedded(a); ok {
		return neverDial(v4)
	}
	if a.Is4() {
		b := a.As4()
		if b[0] == 0 || a == netip.AddrFrom4([4]byte{255, 255, 255, 255}) {
			return true
		}
	}
	return a.IsLoopback() || a.IsUnspecified() || a.IsMulticast() || a == subnetBroadcast
}

// refused reports whether a guest destination is refused before any policy
// is asked: neverDial, or an address of the host itself (for a NAT64
// address, its embedded IPv4 address's).
func refused(a netip.Addr) bool {
	if neverDial(a) {
		return true
	}
	if v4, ok := nat64Embedded(a); ok {
		return isHostAddress(v4) || isHostAddress(a)
	}
	return isHostAddress(a)
}

// nat64Prefix is the well-known NAT64 prefix (RFC 6052): a NAT64 gateway
// translates 64:ff9b::a.b.c.d to the IPv4 destination a.b.c.d.
var nat64Prefix = netip.MustParsePrefix("64:ff9b::/96")

// nat64Embedded returns the IPv4 address a NAT64 address embeds.
func nat64Embedded(a netip.Addr) (netip.Addr, bool) {
	if !nat64Prefix.Contains(a) {
		return netip.Addr{}, false
	}
	b := a.As16()
	return netip.AddrFrom4([4]byte(b[12:])), true
}

// subnetBroadcast is GuestSubnetIPv4's directed broadcast address.
var subnetBroadcast = func() netip.Addr {
	b := GuestSubnetIPv4.Masked().Addr().As4()
	for i := GuestSubnetIPv4.Bits(); i < 32; i++ {
		b[i/8] |= 1 << (7 - i%8)
	}
	return netip.AddrFrom4(b)
}()

func isGateway(a netip.Addr) bool { return a == GatewayIPv4 || a == GatewayIPv6 }
