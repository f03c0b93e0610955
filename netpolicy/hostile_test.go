package netpolicy_test

import (
	"bufio"
	"context"
	"encoding/binary"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	mdns "github.com/miekg/dns"
	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/adapters/gonet"
	"gvisor.dev/gvisor/pkg/tcpip/header"
	"gvisor.dev/gvisor/pkg/tcpip/network/arp"
	"gvisor.dev/gvisor/pkg/tcpip/network/ipv4"
	"gvisor.dev/gvisor/pkg/tcpip/stack"
	"gvisor.dev/gvisor/pkg/tcpip/transport/tcp"
	"gvisor.dev/gvisor/pkg/tcpip/transport/udp"
	"gvisor.dev/gvisor/pkg/waiter"

	"github.com/torkbot/sandbox/netpolicy"
	"github.com/torkbot/sandbox/netpolicy/httpproxy"
	"github.com/torkbot/sandbox/netpolicy/link"
)

// The hostile-guest tests drive a Stack over its link from this process:
// raw frames for UDP, a second netstack as the guest for TCP. Each asserts
// a bound on what the host holds.

const hostileMTU = 1500

var guestMAC = tcpip.LinkAddress("\x52\x54\x00\x12\x34\x56")

// hostCost is what this process holds: goroutines, heap plus goroutine
// stacks in bytes, open fds.
func hostCost() (goroutines int, bytes uint64, fds int) {
	runtime.GC()
	runtime.GC() // and what sync.Pools kept through the first
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	ents, _ := os.ReadDir("/proc/self/fd")
	return runtime.NumGoroutine(), m.HeapInuse + m.StackInuse, len(ents)
}

func mib(b uint64) float64 { return float64(b) / (1 << 20) }

// serveHostile starts a Stack with cfg on one end of a pipe and returns the
// guest's end. The Stack is closed at cleanup.
func serveHostile(t *testing.T, cfg netpolicy.Config) net.Conn {
	t.Helper()
	cfg.MTU, cfg.UDPIdleTimeout = hostileMTU, time.Minute
	s, err := netpolicy.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	host, guest := net.Pipe()
	served := make(chan error, 1)
	go func() { served <- s.Serve(context.Background(), host) }()
	t.Cleanup(func() {
		s.Close()
		guest.Close()
		<-served
	})
	return guest
}

// drain reads and discards what the host sends the guest.
func drain(c net.Conn) {
	go io.Copy(io.Discard, c)
}

// udpFrame is an Ethernet frame with an IPv4/UDP datagram from the guest.
func udpFrame(src, dst netip.AddrPort, payload []byte) []byte {
	b := make([]byte, header.EthernetMinimumSize+header.IPv4MinimumSize+header.UDPMinimumSize+len(payload))
	header.Ethernet(b).Encode(&header.EthernetFields{
		SrcAddr: guestMAC, DstAddr: netpolicy.GatewayMAC, Type: header.IPv4ProtocolNumber,
	})
	ip := header.IPv4(b[header.EthernetMinimumSize:])
	ip.Encode(&header.IPv4Fields{
		TotalLength: uint16(len(b) - header.EthernetMinimumSize),
		TTL:         64,
		Protocol:    uint8(header.UDPProtocolNumber),
		SrcAddr:     tcpip.AddrFrom4(src.Addr().As4()),
		DstAddr:     tcpip.AddrFrom4(dst.Addr().As4()),
	})
	ip.SetChecksum(^ip.CalculateChecksum())
	u := header.UDP(ip.Payload())
	u.Encode(&header.UDPFields{SrcPort: src.Port(), DstPort: dst.Port(), Length: uint16(header.UDPMinimumSize + len(payload))})
	copy(u.Payload(), payload) // checksum 0: none, as IPv4 allows
	return b
}

// countingPolicy records the policy calls in flight and blocks each for
// hold, as a slow JavaScript policy would.
type countingPolicy struct {
	hold            time.Duration
	action          netpolicy.Action
	resolvers       []netip.AddrPort
	calls, now, top atomic.Int64
}

func (p *countingPolicy) decide(ctx context.Context, f netpolicy.Flow) (netpolicy.Decision, error) {
	p.calls.Add(1)
	n := p.now.Add(1)
	defer p.now.Add(-1)
	for m := p.top.Load(); n > m && !p.top.CompareAndSwap(m, n); m = p.top.Load() {
	}
	select {
	case <-time.After(p.hold):
	case <-ctx.Done():
	}
	return netpolicy.Decision{Action: p.action, Resolvers: p.resolvers}, nil
}

// A guest spraying datagrams from new 5-tuples (to denied destinations and
// to the gateway's closed ports) makes at most maxUDPFlows flows and
// maxPolicyCalls policy calls at once.
func TestUDPFlowsAreBounded(t *testing.T) {
	baseG, baseB, _ := hostCost()
	policy := &countingPolicy{hold: 2 * time.Second, action: netpolicy.Deny}
	guest := serveHostile(t, netpolicy.Config{Policy: netpolicy.PolicyFunc(policy.decide), Dialer: refuseDialer{t}})
	drain(guest)

	const flows = 8000 // 46-byte datagrams, as the review sent
	payload := make([]byte, 46-header.UDPMinimumSize-header.IPv4MinimumSize+20)
	src := netip.MustParseAddr("10.0.2.2")
	for i := range flows {
		dst := netip.AddrPortFrom(netip.AddrFrom4([4]byte{198, 51, 100, byte(i % 250)}), uint16(1000+i))
		if i%4 == 3 {
			dst = netip.AddrPortFrom(netpolicy.GatewayIPv4, uint16(1000+i))
		}
		if err := link.WriteFrame(guest, udpFrame(netip.AddrPortFrom(src, uint16(10000+i)), dst, payload)); err != nil {
			t.Fatal(err)
		}
	}
	time.Sleep(500 * time.Millisecond)
	g, b, _ := hostCost()
	t.Logf("%d new UDP 5-tuples: %+d goroutines, %+.1f MiB, %d policy calls (at most %d at once)",
		flows, g-baseG, mib(b)-mib(baseB), policy.calls.Load(), policy.top.Load())
	if g-baseG > 256+64 {
		t.Errorf("%d goroutines for %d datagrams; want at most 256 flows", g-baseG, flows)
	}
	if b > baseB+32<<20 {
		t.Errorf("host holds %+.1f MiB after %d datagrams", mib(b)-mib(baseB), flows)
	}
	if top := policy.top.Load(); top > 64 {
		t.Errorf("%d policy calls at once, want at most 64", top)
	}
	if calls := policy.calls.Load(); calls > 256 {
		t.Errorf("%d UDP flows asked the policy, want at most 256", calls)
	}
}

// guestStack is a netstack playing the guest at 10.0.2.2 on conn.
func guestStack(t *testing.T, conn net.Conn) *stack.Stack {
	t.Helper()
	ep, err := link.New(link.Options{MTU: hostileMTU, LinkAddress: guestMAC})
	if err != nil {
		t.Fatal(err)
	}
	ns := stack.New(stack.Options{
		NetworkProtocols:   []stack.NetworkProtocolFactory{ipv4.NewProtocol, arp.NewProtocol},
		TransportProtocols: []stack.TransportProtocolFactory{tcp.NewProtocol, udp.NewProtocol},
	})
	if err := ns.CreateNIC(1, ep); err != nil {
		t.Fatal(err)
	}
	addr := tcpip.ProtocolAddress{Protocol: ipv4.ProtocolNumber, AddressWithPrefix: tcpip.AddrFrom4([4]byte{10, 0, 2, 2}).WithPrefix()}
	addr.AddressWithPrefix.PrefixLen = 24
	if err := ns.AddProtocolAddress(1, addr, stack.AddressProperties{}); err != nil {
		t.Fatal(err)
	}
	ns.SetRouteTable([]tcpip.Route{{Destination: header.IPv4EmptySubnet, Gateway: tcpip.AddrFrom4(netpolicy.GatewayIPv4.As4()), NIC: 1}})
	ctx, cancel := context.WithCancel(context.Background())
	served := make(chan struct{})
	go func() { ep.Serve(ctx, conn); close(served) }()
	t.Cleanup(func() { cancel(); <-served; ns.Destroy() })
	return ns
}

// guestDial connects from the guest with small buffers (the guest's memory
// is this process's too, and is not what is measured); nil if the host
// refused.
func guestDial(t *testing.T, ns *stack.Stack, dst netip.AddrPort) *gonet.TCPConn {
	t.Helper()
	var wq waiter.Queue
	ep, err := ns.NewEndpoint(tcp.ProtocolNumber, ipv4.ProtocolNumber, &wq)
	if err != nil {
		t.Fatal(err)
	}
	ep.SocketOptions().SetReceiveBufferSize(4<<10, true)
	ep.SocketOptions().SetSendBufferSize(64<<10, true)
	entry, ready := waiter.NewChannelEntry(waiter.WritableEvents | waiter.EventHUp | waiter.EventErr)
	wq.EventRegister(&entry)
	defer wq.EventUnregister(&entry)
	switch err := ep.Connect(tcpip.FullAddress{NIC: 1, Addr: tcpip.AddrFrom4(dst.Addr().As4()), Port: dst.Port()}); err.(type) {
	case nil, *tcpip.ErrConnectStarted:
	default:
		t.Fatalf("connect %v: %v", dst, err)
	}
	select {
	case <-ready:
	case <-time.After(10 * time.Second):
		t.Fatalf("connect %v: no answer", dst)
	}
	if err := ep.LastError(); err != nil {
		ep.Close()
		return nil
	}
	return gonet.NewTCPConn(&wq, ep)
}

// Guests that open DNS-over-TCP connections, pipeline queries and never
// read the answers make the host hold a bounded amount: at most
// maxDNSTCPConns connections, each coalescing its answers into a bounded
// send queue.
func TestDNSOverTCPToANonReadingGuestIsBounded(t *testing.T) {
	policy := &countingPolicy{action: netpolicy.Deny} // REFUSED, answered locally
	guestConn := serveHostile(t, netpolicy.Config{Policy: netpolicy.PolicyFunc(policy.decide), Dialer: refuseDialer{t}})
	ns := guestStack(t, guestConn)
	baseG, baseB, _ := hostCost()

	q := new(mdns.Msg)
	q.SetQuestion("a.example.test.", mdns.TypeA)
	wire, _ := q.Pack()
	query := binary.BigEndian.AppendUint16(nil, uint16(len(wire)))
	query = append(query, wire...)
	var batch []byte
	for len(batch) < 64<<10 {
		batch = append(batch, query...)
	}

	const conns = 50
	var accepted atomic.Int64
	var sent atomic.Int64
	var wg sync.WaitGroup
	for range conns {
		c := guestDial(t, ns, netip.AddrPortFrom(netpolicy.GatewayIPv4, 53))
		if c == nil {
			continue
		}
		accepted.Add(1)
		t.Cleanup(func() { c.Close() })
		wg.Add(1)
		go func() {
			defer wg.Done()
			c.SetWriteDeadline(time.Now().Add(4 * time.Second))
			for {
				n, err := c.Write(batch)
				sent.Add(int64(n))
				if err != nil {
					return
				}
			}
		}()
	}
	wg.Wait() // every writer is stuck: the host stopped reading
	g, b, _ := hostCost()
	t.Logf("%d connections (%d accepted) sent %.1f MiB of queries: %+d goroutines, %+.1f MiB",
		conns, accepted.Load(), mib(uint64(sent.Load())), g-baseG, mib(b)-mib(baseB))
	if n := accepted.Load(); n > 16 {
		t.Errorf("%d DNS-over-TCP connections accepted, want at most 16", n)
	}
	if b > baseB+64<<20 {
		t.Errorf("host holds %+.1f MiB for non-reading DNS-over-TCP guests", mib(b)-mib(baseB))
	}
}

// pipeDialer hands the relay one end of a pipe whose other end is up.
type pipeDialer struct{ up chan net.Conn }

func (d pipeDialer) DialContext(_ context.Context, network, address string) (net.Conn, error) {
	a, b := net.Pipe()
	d.up <- b
	return a, nil
}

// granted connects the guest to a destination the policy accepts and
// returns the flow's two ends: the guest's connection and the upstream's.
func (d pipeDialer) granted(t *testing.T, ns *stack.Stack) (*gonet.TCPConn, net.Conn) {
	t.Helper()
	c := guestDial(t, ns, netip.MustParseAddrPort("198.51.100.10:80"))
	if c == nil {
		t.Fatal("the granted connection was refused")
	}
	t.Cleanup(func() { c.Close() })
	select {
	case up := <-d.up:
		t.Cleanup(func() { up.Close() })
		return c, up
	case <-time.After(10 * time.Second):
		t.Fatal("the stack did not dial upstream")
	}
	return nil, nil
}

// An upstream trickling one byte per write toward a guest that does not
// read costs the host at most the guest connection's buffers, not hundreds
// of bytes per byte.
func TestGrantedTCPTrickleToANonReadingGuestIsBounded(t *testing.T) {
	policy := &countingPolicy{action: netpolicy.Accept}
	dialer := pipeDialer{up: make(chan net.Conn, 1)}
	ns := guestStack(t, serveHostile(t, netpolicy.Config{Policy: netpolicy.PolicyFunc(policy.decide), Dialer: dialer}))
	baseG, baseB, _ := hostCost()
	_, up := dialer.granted(t, ns)
	const trickle = 1 << 20
	written := 0
	one := []byte{'x'}
	up.SetWriteDeadline(time.Now().Add(3 * time.Second))
	for ; written < trickle; written++ {
		if _, err := up.Write(one); err != nil {
			break // the relay stopped reading: the guest's buffers are full
		}
	}
	g, b, _ := hostCost()
	if profileHook != nil {
		profileHook()
	}
	t.Logf("upstream trickled %d bytes one at a time to a non-reading guest: %+d goroutines, %+.1f MiB",
		written, g-baseG, mib(b)-mib(baseB))
	if b > baseB+4<<20 {
		t.Errorf("host holds %+.1f MiB for %d bytes trickled", mib(b)-mib(baseB), written)
	}
}

// A flood of DNS queries over UDP to a silent resolver holds at most
// maxDNSQueries upstream sockets.
func TestDNSOverUDPQueriesAreBounded(t *testing.T) {
	silent, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer silent.Close()
	policy := &countingPolicy{action: netpolicy.AcceptDNS, resolvers: []netip.AddrPort{silent.LocalAddr().(*net.UDPAddr).AddrPort()}}
	guest := serveHostile(t, netpolicy.Config{Policy: netpolicy.PolicyFunc(policy.decide), Dialer: &net.Dialer{}})
	drain(guest)
	_, _, baseFDs := hostCost()

	const queries = 3000
	src := netip.MustParseAddr("10.0.2.2")
	for i := range queries {
		q := new(mdns.Msg)
		q.SetQuestion("a.example.test.", mdns.TypeA)
		q.Id = uint16(i)
		wire, _ := q.Pack()
		if err := link.WriteFrame(guest, udpFrame(netip.AddrPortFrom(src, uint16(20000+i)), netip.AddrPortFrom(netpolicy.GatewayIPv4, 53), wire)); err != nil {
			t.Fatal(err)
		}
	}
	time.Sleep(500 * time.Millisecond)
	_, _, fds := hostCost()
	t.Logf("%d queries to a silent resolver: %+d fds", queries, fds-baseFDs)
	if fds-baseFDs > 64+8 {
		t.Errorf("%d host fds for %d queries in flight, want at most 64", fds-baseFDs, queries)
	}
}

// The coalescing toward the guest loses, reorders and holds back nothing:
// a request/response exchange whose responses come in several small
// writes, then a bulk transfer, arrive whole and in order.
func TestGrantedTCPDeliversEverythingToAReadingGuest(t *testing.T) {
	policy := &countingPolicy{action: netpolicy.Accept}
	dialer := pipeDialer{up: make(chan net.Conn, 1)}
	ns := guestStack(t, serveHostile(t, netpolicy.Config{Policy: netpolicy.PolicyFunc(policy.decide), Dialer: dialer}))
	c, up := dialer.granted(t, ns)

	const rounds, bulk = 200, 4 << 20
	go func() {
		buf := make([]byte, 4)
		for i := range rounds {
			if _, err := io.ReadFull(up, buf); err != nil {
				return
			}
			for _, part := range []string{"po", "n", fmt.Sprintf("g%04d", i)} {
				if _, err := up.Write([]byte(part)); err != nil {
					return
				}
			}
		}
		block := make([]byte, 1000)
		for i := 0; i < bulk; i += len(block) {
			for j := range block {
				block[j] = byte(i + j)
			}
			if _, err := up.Write(block[:min(len(block), bulk-i)]); err != nil {
				return
			}
		}
		up.Close()
	}()

	c.SetDeadline(time.Now().Add(60 * time.Second))
	start := time.Now()
	reply := make([]byte, 8)
	for i := range rounds {
		if _, err := c.Write([]byte("ping")); err != nil {
			t.Fatal(err)
		}
		if _, err := io.ReadFull(c, reply); err != nil {
			t.Fatalf("round %d: %v", i, err)
		}
		if want := fmt.Sprintf("pong%04d", i); string(reply) != want {
			t.Fatalf("round %d: %q, want %q", i, reply, want)
		}
	}
	exchange := time.Since(start)
	got, err := io.ReadAll(c)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != bulk {
		t.Fatalf("bulk: %d bytes, want %d", len(got), bulk)
	}
	for i, b := range got {
		if b != byte(i) {
			t.Fatalf("bulk byte %d = %d, want %d", i, b, byte(i))
		}
	}
	t.Logf("%d request/response rounds in %v (%v each), then %d MiB in %v", rounds, exchange, exchange/rounds, bulk>>20, time.Since(start)-exchange)
}

// The same for an intercepted HTTP flow: the response body trickles from
// the upstream one byte per write to a guest that sent its request and
// stopped reading.
func TestInterceptedHTTPTrickleToANonReadingGuestIsBounded(t *testing.T) {
	ca, err := httpproxy.NewCA(httpproxy.CAOptions{})
	if err != nil {
		t.Fatal(err)
	}
	dialer := pipeDialer{up: make(chan net.Conn, 1)}
	proxy, err := httpproxy.New(httpproxy.Config{CA: ca, Dialer: dialer, NoSystemRoots: true})
	if err != nil {
		t.Fatal(err)
	}
	policy := &countingPolicy{action: netpolicy.AcceptHTTP}
	ns := guestStack(t, serveHostile(t, netpolicy.Config{Policy: netpolicy.PolicyFunc(policy.decide), Dialer: refuseDialer{t}, HTTP: proxy}))
	baseG, baseB, _ := hostCost()

	c := guestDial(t, ns, netip.MustParseAddrPort("198.51.100.10:80"))
	if c == nil {
		t.Fatal("the intercepted connection was refused")
	}
	defer c.Close()
	if _, err := c.Write([]byte("GET /stream HTTP/1.1\r\nHost: origin.example.test\r\n\r\n")); err != nil {
		t.Fatal(err)
	}
	var up net.Conn
	select {
	case up = <-dialer.up:
	case <-time.After(10 * time.Second):
		t.Fatal("the proxy did not dial upstream")
	}
	defer up.Close()
	if _, err := http.ReadRequest(bufio.NewReader(up)); err != nil {
		t.Fatalf("upstream request: %v", err)
	}
	const body = 1 << 20
	if _, err := fmt.Fprintf(up, "HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n", body); err != nil {
		t.Fatal(err)
	}
	written := 0
	up.SetWriteDeadline(time.Now().Add(3 * time.Second))
	for ; written < body; written++ {
		if _, err := up.Write([]byte{'x'}); err != nil {
			break
		}
	}
	g, b, _ := hostCost()
	t.Logf("upstream trickled %d body bytes one at a time to a non-reading guest: %+d goroutines, %+.1f MiB",
		written, g-baseG, mib(b)-mib(baseB))
	if b > baseB+4<<20 {
		t.Errorf("host holds %+.1f MiB for %d bytes trickled", mib(b)-mib(baseB), written)
	}
}

var profileHook func()
