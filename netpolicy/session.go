package netpolicy

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	mdns "github.com/miekg/dns"
	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/adapters/gonet"
	"gvisor.dev/gvisor/pkg/tcpip/network/ipv4"
	"gvisor.dev/gvisor/pkg/tcpip/network/ipv6"
	"gvisor.dev/gvisor/pkg/tcpip/stack"
	"gvisor.dev/gvisor/pkg/tcpip/transport/tcp"
	"gvisor.dev/gvisor/pkg/tcpip/transport/udp"
	"gvisor.dev/gvisor/pkg/waiter"

	"github.com/torkbot/sandbox/netpolicy/dns"
	"github.com/torkbot/sandbox/netpolicy/httpproxy"
)

// dnsPort is the sandbox resolver's port on the gateways.
const dnsPort = 53

// Bounds of the sandbox resolver (see docs/security.md).
const (
	// dnsTCPIdleTimeout closes a guest's DNS-over-TCP connection left idle.
	dnsTCPIdleTimeout = 30 * time.Second
	// dnsTCPWriteTimeout closes a DNS-over-TCP connection whose guest has
	// not taken its answers for that long.
	dnsTCPWriteTimeout = 10 * time.Second
	// maxDNSTCPConns bounds the guest's DNS-over-TCP connections; more are
	// reset. Resolvers use TCP only for truncated answers.
	maxDNSTCPConns = 16
	// maxDNSQueries bounds the UDP queries being resolved at once; more
	// are dropped, as an overloaded resolver does (the client retries).
	// Each holds a goroutine and an upstream socket.
	maxDNSQueries = 64
)

// Bounds of the guest's flows (see docs/security.md).
const (
	// maxUDPFlows bounds the UDP flows alive at once (being decided,
	// relayed, or having their datagrams dropped until idle); datagrams
	// that would start another are dropped.
	maxUDPFlows = 256
	// maxPolicyCalls bounds the Policy.Decide calls in flight; more wait.
	// Each may be a call into JavaScript, whose queue has no bound.
	maxPolicyCalls = 64
)

// session is the state of one Serve: a netstack and the goroutines serving
// its flows.
type session struct {
	*Stack
	// ctx ends when the session shuts down.
	ctx context.Context
	ns  *stack.Stack

	// mu guards closing.
	mu sync.Mutex
	// closing is set once shutdown began; no goroutine is tracked after.
	closing bool
	// wg counts tracked goroutines.
	wg sync.WaitGroup

	// Tokens of the bounded resources: one per policy call in flight, per
	// UDP flow, per DNS-over-TCP connection, per UDP query resolving.
	policyCalls, udpFlows, dnsTCPConns, dnsQueries chan struct{}
}

// take takes a token of sem without waiting; false if none is left.
func take(sem chan struct{}) bool {
	select {
	case sem <- struct{}{}:
		return true
	default:
		return false
	}
}

// start installs the flow handlers and the resolver on both gateways.
func (s *session) start() error {
	s.policyCalls = make(chan struct{}, maxPolicyCalls)
	s.udpFlows = make(chan struct{}, maxUDPFlows)
	s.dnsTCPConns = make(chan struct{}, maxDNSTCPConns)
	s.dnsQueries = make(chan struct{}, maxDNSQueries)
	s.ns.SetTransportProtocolHandler(tcp.ProtocolNumber, tcp.NewForwarder(s.ns, 0, maxInFlightSYN, s.handleTCP).HandlePacket)
	s.ns.SetTransportProtocolHandler(udp.ProtocolNumber, udp.NewForwarder(s.ns, s.handleUDP).HandlePacket)
	for _, gw := range []struct {
		addr  netip.Addr
		proto tcpip.NetworkProtocolNumber
	}{{GatewayIPv4, ipv4.ProtocolNumber}, {GatewayIPv6, ipv6.ProtocolNumber}} {
		laddr := tcpip.FullAddress{NIC: nicID, Addr: tcpip.AddrFromSlice(gw.addr.AsSlice()), Port: dnsPort}
		c, err := gonet.DialUDP(s.ns, &laddr, nil, gw.proto)
		if err != nil {
			return fmt.Errorf("netpolicy: cannot listen on %s: %w", netip.AddrPortFrom(gw.addr, dnsPort), err)
		}
		if !s.goTracked(func() { s.serveDNSUDP(c, netip.AddrPortFrom(gw.addr, dnsPort)) }) {
			c.Close()
		}
	}
	return nil
}

// shutdown ends every flow and waits for every goroutine of the session.
func (s *session) shutdown(cancel context.CancelFunc) {
	s.mu.Lock()
	s.closing = true
	s.mu.Unlock()
	cancel()
	s.ns.Destroy()
	s.wg.Wait()
}

// enter tracks the calling goroutine; it returns false once shutdown began.
// Every successful enter must be paired with s.wg.Done.
func (s *session) enter() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closing {
		return false
	}
	s.wg.Add(1)
	return true
}

// goTracked runs f in a tracked goroutine; false if shutdown began.
func (s *session) goTracked(f func()) bool {
	if !s.enter() {
		return false
	}
	go func() {
		defer s.wg.Done()
		f()
	}()
	return true
}

// decide asks the policy; an error denies. The caller calls release once
// it no longer needs the decision (the flow ended).
func (s *session) decide(f Flow) (d Decision, release func()) {
	select {
	case s.policyCalls <- struct{}{}:
	case <-s.ctx.Done():
		return Decision{Action: Deny}, func() {}
	}
	d, err := s.cfg.Policy.Decide(s.ctx, f)
	<-s.policyCalls
	if d.Release != nil {
		release = d.Release
	} else {
		release = func() {}
	}
	if err != nil {
		return Decision{Action: Deny}, release
	}
	return d, release
}

func addrPort(a tcpip.Address, port uint16) netip.AddrPort {
	ip, _ := netip.AddrFromSlice(a.AsSlice())
	return netip.AddrPortFrom(ip, port)
}

// handleTCP decides a new TCP connection. It runs in a goroutine of the
// forwarder.
func (s *session) handleTCP(r *tcp.ForwarderRequest) {
	if !s.enter() {
		r.Complete(true)
		return
	}
	defer s.wg.Done()
	id := r.ID()
	src, dst := addrPort(id.RemoteAddress, id.RemotePort), addrPort(id.LocalAddress, id.LocalPort)
	switch {
	case isGateway(dst.Addr()):
		if dst.Port() != dnsPort || !take(s.dnsTCPConns) {
			r.Complete(true)
			return
		}
		defer func() { <-s.dnsTCPConns }()
		guest, err := s.acceptTCP(r, dnsTCPWriteTimeout)
		if err != nil {
			return
		}
		s.serveDNSTCP(guest, src, dst)
		return
	case refused(dst.Addr()):
		r.Complete(true)
		return
	}
	flow := Flow{Transport: "tcp", Src: src, Dst: dst, Hostname: s.pins.Lookup(dst.Addr())}
	d, release := s.decide(flow)
	defer release()
	switch {
	case d.Action == AcceptHTTP && s.cfg.HTTP != nil:
		// The interceptor dials per request, so an unreachable upstream
		// is the guest's 502, not a reset.
		guest, err := s.acceptTCP(r, 0)
		if err != nil {
			return
		}
		defer guest.Close()
		s.cfg.HTTP.ServeConn(s.ctx, guest, httpproxy.Flow{Src: src, Dst: dst, Hostname: flow.Hostname, Middleware: d.Middleware})
		return
	case d.Action != Accept:
		r.Complete(true)
		return
	}
	dctx, cancel := context.WithTimeout(s.ctx, s.cfg.DialTimeout)
	up, err := s.cfg.Dialer.DialContext(dctx, "tcp", dst.String())
	cancel()
	if err != nil {
		r.Complete(true)
		return
	}
	guest, err := s.acceptTCP(r, 0)
	if err != nil {
		up.Close()
		return
	}
	relayTCP(s.ctx, guest, up)
}

// acceptTCP completes the guest's handshake; writes to the guest go through
// a guestConn with writeTimeout (0: none).
func (s *session) acceptTCP(r *tcp.ForwarderRequest, writeTimeout time.Duration) (*guestConn, error) {
	var wq waiter.Queue
	ep, err := r.CreateEndpoint(&wq)
	if err != nil {
		r.Complete(true)
		return nil, fmt.Errorf("netpolicy: cannot accept guest connection: %s", err)
	}
	r.Complete(false)
	conn := gonet.NewTCPConn(&wq, ep)
	guest := newGuestConn(s.ctx, conn, ep, writeTimeout, s.goTracked)
	if guest == nil {
		conn.Close()
		return nil, ErrClosed
	}
	return guest, nil
}

type closeWriter interface{ CloseWrite() error }

// relayTCP copies both ways until both directions ended or ctx ends. A
// direction that reaches EOF half-closes its destination; an error aborts
// both. Both conns are closed on return.
func relayTCP(ctx context.Context, guest *guestConn, up net.Conn) {
	var a, b net.Conn = guest, up
	abort := func() { guest.abort(); up.Close() }
	stop := context.AfterFunc(ctx, abort)
	defer stop()
	defer abort()
	pipe := func(dst, src net.Conn) {
		if _, err := io.Copy(dst, src); err != nil {
			abort()
			return
		}
		if cw, ok := dst.(closeWriter); ok {
			cw.CloseWrite()
		} else {
			abort()
		}
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		pipe(b, a)
	}()
	pipe(a, b)
	<-done
}

// handleUDP creates an endpoint for a new UDP flow and serves it in a
// tracked goroutine. It runs on the stack's packet path and must not block.
// Datagrams to the gateways' other ports and to destinations never dialed
// make no flow: no policy is asked for them, so there is nothing to
// remember. Beyond maxUDPFlows, datagrams that would start a flow are
// dropped. The host's own addresses are recognised in the flow's goroutine
// (a kernel lookup has no place on the packet path): such a flow drops its
// datagrams until idle without asking the policy.
func (s *session) handleUDP(r *udp.ForwarderRequest) bool {
	id := r.ID()
	src, dst := addrPort(id.RemoteAddress, id.RemotePort), addrPort(id.LocalAddress, id.LocalPort)
	if isGateway(dst.Addr()) || neverDial(dst.Addr()) || !take(s.udpFlows) {
		return true // handled: dropped, without an ICMP error per datagram
	}
	var wq waiter.Queue
	ep, err := r.CreateEndpoint(&wq)
	if err != nil {
		<-s.udpFlows
		return false
	}
	guest := gonet.NewUDPConn(&wq, ep)
	if !s.goTracked(func() {
		defer func() { <-s.udpFlows }()
		s.serveUDPFlow(guest, src, dst)
	}) {
		<-s.udpFlows
		guest.Close()
	}
	return true
}

// serveUDPFlow decides a UDP flow, then relays it, or drops its datagrams,
// until it is idle.
func (s *session) serveUDPFlow(guest *gonet.UDPConn, src, dst netip.AddrPort) {
	defer guest.Close()
	stop := context.AfterFunc(s.ctx, func() { guest.Close() })
	defer stop()
	idle := s.cfg.UDPIdleTimeout
	if refused(dst.Addr()) {
		drainUntilIdle(guest, idle)
		return
	}
	d, release := s.decide(Flow{Transport: "udp", Src: src, Dst: dst, Hostname: s.pins.Lookup(dst.Addr())})
	defer release()
	if d.Action != Accept {
		drainUntilIdle(guest, idle)
		return
	}
	dctx, cancel := context.WithTimeout(s.ctx, s.cfg.DialTimeout)
	up, err := s.cfg.Dialer.DialContext(dctx, "udp", dst.String())
	cancel()
	if err != nil {
		drainUntilIdle(guest, idle)
		return
	}
	defer up.Close()
	relayUDP(s.ctx, guest, up, idle, int(s.cfg.MTU))
}

// drainUntilIdle drops datagrams until none came for idle.
func drainUntilIdle(c net.Conn, idle time.Duration) {
	var buf [1]byte // the rest of each datagram is discarded
	for {
		c.SetReadDeadline(time.Now().Add(idle))
		if _, err := c.Read(buf[:]); err != nil {
			return
		}
	}
}

// relayUDP copies datagrams both ways until neither direction carried one
// for idle, either side fails, or ctx ends. Both conns are closed on return.
// The guest sends datagrams of at most mtu bytes.
func relayUDP(ctx context.Context, guest, up net.Conn, idle time.Duration, mtu int) {
	abort := func() { guest.Close(); up.Close() }
	stop := context.AfterFunc(ctx, abort)
	defer stop()
	defer abort()
	var last atomic.Int64
	last.Store(time.Now().UnixNano())
	pipe := func(dst, src net.Conn, size int) {
		defer abort()
		buf := make([]byte, size)
		for {
			src.SetReadDeadline(time.Now().Add(idle))
			n, err := src.Read(buf)
			if err != nil {
				var ne net.Error
				if errors.As(err, &ne) && ne.Timeout() && time.Since(time.Unix(0, last.Load())) < idle {
					continue
				}
				return
			}
			last.Store(time.Now().UnixNano())
			if _, err := dst.Write(buf[:n]); err != nil {
				return
			}
		}
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		pipe(up, guest, mtu)
	}()
	pipe(guest, up, 1<<16)
	<-done
}

// serveDNSUDP answers queries to the resolver at gw until c is closed.
func (s *session) serveDNSUDP(c *gonet.UDPConn, gw netip.AddrPort) {
	stop := context.AfterFunc(s.ctx, func() { c.Close() })
	defer stop()
	defer c.Close()
	buf := make([]byte, mdns.MaxMsgSize)
	for {
		n, from, err := c.ReadFrom(buf)
		if err != nil {
			return
		}
		src := from.(*net.UDPAddr).AddrPort()
		q, err := dns.ParseQuery(buf[:n])
		if err != nil {
			continue
		}
		if !take(s.dnsQueries) {
			continue // dropped: the guest's resolver retries
		}
		if !s.goTracked(func() {
			defer func() { <-s.dnsQueries }()
			resp := s.resolve("udp", src, gw, q)
			size := mdns.MinMsgSize
			if opt := q.IsEdns0(); opt != nil {
				size = max(size, int(opt.UDPSize()))
			}
			resp.Truncate(size)
			if b, err := resp.Pack(); err == nil {
				c.WriteTo(b, net.UDPAddrFromAddrPort(src))
			}
		}) {
			<-s.dnsQueries
		}
	}
}

// serveDNSTCP answers the queries of one guest DNS-over-TCP connection, in
// order, until the guest closes it or it is idle. The framing (RFC 1035
// 4.2.2: a 2-byte length before each message) is miekg/dns's Conn, which
// writes each answer with its length in one Write, so a guest that never
// reads still costs one segment per answer (docs/security.md). Its
// ReadMsgHeader and Write rather than ReadMsg and WriteMsg: those also
// verify and sign TSIG records, which have no key here, so a query or an
// upstream answer carrying one would end the connection; the query is
// checked by dns.ParseQuery instead, as over UDP. The bounds on the
// connection (at most maxDNSTCPConns, dnsTCPWriteTimeout) are handleTCP's.
func (s *session) serveDNSTCP(guest *guestConn, src, gw netip.AddrPort) {
	defer guest.Close()
	stop := context.AfterFunc(s.ctx, func() { guest.Close() })
	defer stop()
	conn := &mdns.Conn{Conn: guest}
	for {
		guest.SetReadDeadline(time.Now().Add(dnsTCPIdleTimeout))
		b, err := conn.ReadMsgHeader(nil)
		if err != nil {
			return
		}
		q, err := dns.ParseQuery(b)
		if err != nil {
			return
		}
		if b, err = s.resolve("tcp", src, gw, q).Pack(); err != nil {
			return
		}
		if _, err := conn.Write(b); err != nil {
			return
		}
	}
}

// resolve decides one query and answers it: forwarded to the decision's
// resolvers when it names some (recording pins), answered from the host's
// own resolution when it names none (also pinned), REFUSED when denied,
// SERVFAIL when no upstream answered.
func (s *session) resolve(network string, src, gw netip.AddrPort, q *mdns.Msg) *mdns.Msg {
	d, release := s.decide(Flow{Transport: network, Src: src, Dst: gw, DNS: true})
	defer release()
	if d.Action != AcceptDNS {
		return dns.Reply(q, mdns.RcodeRefused)
	}
	var resp *mdns.Msg
	if len(d.Resolvers) == 0 {
		ctx, cancel := context.WithTimeout(s.ctx, dns.AttemptTimeout)
		resp = dns.AnswerFromHost(ctx, s.cfg.HostLookup, q)
		cancel()
	} else {
		var err error
		if resp, err = dns.Exchange(s.ctx, s.cfg.Dialer.DialContext, network, d.Resolvers, q); err != nil {
			return dns.Reply(q, mdns.RcodeServerFailure)
		}
	}
	s.pins.Record(resp)
	return resp
}
