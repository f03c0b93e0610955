package netpolicy_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	mdns "github.com/miekg/dns"
	"golang.org/x/sys/unix"

	"github.com/torkbot/sandbox/internal/netns"
	"github.com/torkbot/sandbox/internal/testutil"
	"github.com/torkbot/sandbox/netpolicy"
	"github.com/torkbot/sandbox/netpolicy/dns"
	"github.com/torkbot/sandbox/netpolicy/httpproxy"
	"github.com/torkbot/sandbox/netpolicy/link"
)

// envInNetns marks the re-executed test process running in its own network
// namespace.
const envInNetns = "NETPOLICY_TEST_IN_NETNS"

// Origins: documentation addresses held by lo inside a namespace of their
// own (originsNetns), one veth hop from the test's namespace. They must not
// be the test namespace's own addresses: the Stack refuses those.
var (
	originA  = netip.MustParseAddr("198.51.100.10") // allowed origin
	originB  = netip.MustParseAddr("203.0.113.10")  // denied origin, custom resolver
	resolver = netip.MustParseAddr("192.0.2.53")    // "host" resolver
	origin6  = netip.MustParseAddr("2001:db8::10")
	customIP = netip.MustParseAddr("203.0.113.99") // what the custom resolver answers
)

var tools = map[string]string{"dig": "dnsutils", "nc": "netcat-openbsd", "socat": "socat", "curl": "curl", "ip": "iproute2"}

// hostAddr is the test namespace's own address on its link to the origins:
// to the Stack, the host's address. hostAddrs are all the addresses of the
// test namespace, the Stack's host, that are not loopback.
var (
	hostAddr  = netip.MustParseAddr("10.255.0.1")
	hostAddrs = []netip.Addr{hostAddr, netip.MustParseAddr("fd99::1"), netip.MustParseAddr("192.0.2.53")}
)

// TestNetns runs real clients in a "guest" namespace whose TAP device is
// bridged to a Stack; upstream dials land on origins in a namespace of their
// own, reached from the test's namespace, which has no route out.
func TestNetns(t *testing.T) {
	if os.Getenv(envInNetns) == "" {
		reexecInNetns(t)
		return
	}
	h := newHarness(t)

	t.Run("http raw accept", func(t *testing.T) {
		out := h.guest(t, "curl", "-sS", "--max-time", "5", "http://198.51.100.10/")
		if out != "hello from origin" {
			t.Fatalf("curl = %q", out)
		}
		h.policy.wantFlow(t, func(f netpolicy.Flow) bool { return f.Transport == "tcp" && f.Dst == netip.AddrPortFrom(originA, 80) })
	})
	t.Run("tcp echo half-close", func(t *testing.T) {
		if out := h.guestIn(t, "hello", "nc", "-N", "-w", "5", "198.51.100.10", "7"); out != "hello" {
			t.Fatalf("echo = %q", out)
		}
	})
	t.Run("server-first banner", func(t *testing.T) {
		if out := h.guestIn(t, "", "nc", "-w", "5", "198.51.100.10", "22"); out != "SSH-2.0-origin" {
			t.Fatalf("banner = %q", out)
		}
	})
	t.Run("ipv6 echo", func(t *testing.T) {
		if out := h.guestIn(t, "hello6", "nc", "-N", "-w", "5", "2001:db8::10", "7"); out != "hello6" {
			t.Fatalf("echo = %q", out)
		}
	})
	t.Run("udp echo", func(t *testing.T) {
		if out := h.guestIn(t, "ping", "socat", "-t", "1", "-", "UDP:198.51.100.10:7"); out != "ping" {
			t.Fatalf("udp echo = %q", out)
		}
		h.policy.wantFlow(t, func(f netpolicy.Flow) bool { return f.Transport == "udp" && f.Dst == netip.AddrPortFrom(originA, 7) })
	})
	t.Run("deny resets", func(t *testing.T) {
		if out, err := h.guestErr("curl", "-sS", "--max-time", "5", "http://203.0.113.10/"); err == nil {
			t.Fatalf("curl succeeded: %q", out)
		}
		if n := h.deniedAccepts.Load(); n != 0 {
			t.Fatalf("denied origin saw %d connections", n)
		}
	})
	t.Run("policy error denies", func(t *testing.T) {
		if out, err := h.guestErr("nc", "-z", "-w", "3", "203.0.113.10", "81"); err == nil {
			t.Fatalf("nc succeeded: %q", out)
		}
		if n := h.deniedAccepts.Load(); n != 0 {
			t.Fatalf("origin saw %d connections", n)
		}
	})
	t.Run("host's own addresses refused", func(t *testing.T) {
		// A service bound to every address of the host, as a database or
		// a container engine's API may be, under a policy that accepts
		// the host's addresses.
		l, err := net.Listen("tcp", ":7777")
		if err != nil {
			t.Fatal(err)
		}
		defer l.Close()
		var accepted atomic.Int64
		go func() {
			for {
				c, err := l.Accept()
				if err != nil {
					return
				}
				accepted.Add(1)
				c.Close()
			}
		}()
		pc, err := net.ListenPacket("udp", ":7777")
		if err != nil {
			t.Fatal(err)
		}
		defer pc.Close()
		var datagrams atomic.Int64
		go func() {
			buf := make([]byte, 1500)
			for {
				if _, _, err := pc.ReadFrom(buf); err != nil {
					return
				}
				datagrams.Add(1)
			}
		}()
		before := h.policy.count()
		for _, a := range hostAddrs {
			if out, err := h.guestErr("nc", "-z", "-w", "3", a.String(), "7777"); err == nil {
				t.Errorf("guest connected to the host's %s:7777: %q", a, out)
			}
			h.guestIn(t, "ping", "socat", "-t", "0.5", "-", "UDP:"+netip.AddrPortFrom(a, 7777).String())
		}
		if n := accepted.Load(); n != 0 {
			t.Errorf("the host's service accepted %d connections from the guest", n)
		}
		if n := datagrams.Load(); n != 0 {
			t.Errorf("the host's service got %d datagrams from the guest", n)
		}
		if n := h.policy.count() - before; n != 0 {
			t.Errorf("the policy was asked %d times about the host's addresses: %v", n, h.policy.since(before))
		}
	})
	t.Run("gateway non-dns refused", func(t *testing.T) {
		before := h.policy.count()
		if _, err := h.guestErr("nc", "-z", "-w", "3", "10.0.2.1", "80"); err == nil {
			t.Fatal("connected to gateway:80")
		}
		if h.policy.count() != before {
			t.Fatal("policy asked for gateway:80")
		}
	})
	t.Run("dns udp", func(t *testing.T) {
		if out := h.guest(t, "dig", "@10.0.2.1", "+short", "+tries=1", "+time=3", "origin.example.test"); out != "198.51.100.10" {
			t.Fatalf("dig = %q", out)
		}
		h.policy.wantFlow(t, func(f netpolicy.Flow) bool { return f.DNS && f.Transport == "udp" })
	})
	t.Run("dns tcp keepopen", func(t *testing.T) {
		before := h.policy.count()
		out := h.guest(t, "dig", "@10.0.2.1", "+tcp", "+keepopen", "+short", "+tries=1", "+time=3", "origin.example.test", "v6.example.test", "AAAA")
		if out != "198.51.100.10\n2001:db8::10" {
			t.Fatalf("dig = %q", out)
		}
		flows := h.policy.since(before)
		if len(flows) != 2 || !flows[0].DNS || flows[0].Transport != "tcp" || flows[0].Src != flows[1].Src {
			t.Fatalf("want two DNS queries on one TCP connection, got %+v", flows)
		}
	})
	t.Run("dns ipv6 resolver", func(t *testing.T) {
		if out := h.guest(t, "dig", "@fd00:5a4e:6c00::1", "+short", "+tries=1", "+time=3", "AAAA", "v6.example.test"); out != "2001:db8::10" {
			t.Fatalf("dig = %q", out)
		}
	})
	t.Run("dns custom resolvers", func(t *testing.T) {
		h.policy.setResolvers([]netip.AddrPort{netip.AddrPortFrom(originB, 53)})
		defer h.policy.setResolvers(nil)
		before := h.customQueries.Load()
		if out := h.guest(t, "dig", "@10.0.2.1", "+short", "+tries=1", "+time=3", "anything.test"); out != customIP.String() {
			t.Fatalf("dig = %q", out)
		}
		if h.customQueries.Load() == before {
			t.Fatal("custom resolver not queried")
		}
	})
	t.Run("dns denied refused", func(t *testing.T) {
		h.policy.denyDNS.Store(true)
		defer h.policy.denyDNS.Store(false)
		out := h.guest(t, "dig", "@10.0.2.1", "+tries=1", "+time=3", "origin.example.test")
		if !strings.Contains(out, "status: REFUSED") {
			t.Fatalf("dig = %q", out)
		}
	})
	t.Run("pins name following flows", func(t *testing.T) {
		if out := h.guest(t, "dig", "@10.0.2.1", "+short", "+tries=1", "+time=3", "www.example.test"); !strings.HasSuffix(out, "198.51.100.10") {
			t.Fatalf("dig = %q", out)
		}
		before := h.policy.count()
		h.guest(t, "curl", "-sS", "--max-time", "5", "http://198.51.100.10/")
		flows := h.policy.since(before)
		if len(flows) != 1 || flows[0].Hostname != "www.example.test" {
			t.Fatalf("flows = %+v, want one with Hostname www.example.test", flows)
		}
	})

	h.closeNoLeaks(t)
}

// closeNoLeaks closes the harness's stack and fails the test if goroutines
// outlive it (origins started before the baseline excepted).
func (h *harness) closeNoLeaks(t *testing.T) {
	h.close(t)
	deadline := time.Now().Add(5 * time.Second)
	for runtime.NumGoroutine() > h.baseline && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	if n := runtime.NumGoroutine(); n > h.baseline {
		buf := make([]byte, 1<<20)
		t.Fatalf("%d goroutines after Close, baseline %d:\n%s", n, h.baseline, buf[:runtime.Stack(buf, true)])
	}
}

// reexecInNetns runs the calling top-level test again in a new network and
// mount namespace. It skips, naming them, when the guest's clients (tools,
// and extra: binary → Debian package) are missing: scripts/test.sh
// installs them.
func reexecInNetns(t *testing.T, extra ...map[string]string) {
	if os.Geteuid() != 0 {
		t.Skip("needs root for network namespaces and TAP devices")
	}
	for _, set := range append([]map[string]string{tools}, extra...) {
		for bin, pkg := range set {
			testutil.Need(t, bin, pkg)
		}
	}
	args := []string{"-test.run=^" + t.Name() + "$", "-test.count=1"}
	if testing.Verbose() {
		args = append(args, "-test.v")
	}
	cmd := exec.Command(os.Args[0], args...)
	cmd.Env = append(os.Environ(), envInNetns+"=1")
	cmd.SysProcAttr = &syscall.SysProcAttr{Cloneflags: syscall.CLONE_NEWNET | syscall.CLONE_NEWNS}
	out, err := cmd.CombinedOutput()
	if testing.Verbose() || err != nil {
		t.Logf("in namespace:\n%s", out)
	}
	if err != nil {
		t.Fatalf("namespace run: %v", err)
	}
}

type harness struct {
	stack    *netpolicy.Stack
	policy   *testPolicy
	netns    string
	cancel   context.CancelFunc
	served   chan error
	baseline int

	deniedAccepts atomic.Int64
	customQueries atomic.Int64

	// upstreamRoots are the PEM CAs of origins that serve HTTPS, which
	// extra origins add; interceptCAFile is the interception CA for the
	// guest's clients.
	upstreamRoots   []byte
	interceptCAFile string
}

// requireIsolated refuses to go on unless this namespace has no default
// route: nothing the test sends can leave the machine.
func requireIsolated(t *testing.T) {
	for _, fam := range []string{"-4", "-6"} {
		out, err := exec.Command("ip", fam, "route", "show", "default").CombinedOutput()
		if err != nil || strings.TrimSpace(string(out)) != "" {
			t.Fatalf("refusing to run: namespace has a default route (%s) or ip failed: %v", out, err)
		}
	}
}

// newHarness sets up this namespace's origins and a guest namespace whose
// TAP is bridged to a Stack. extraOrigins, if any, start more origins before
// the goroutine baseline is taken.
func newHarness(t *testing.T, extraOrigins ...func(*testing.T, *harness)) *harness {
	if err := syscall.Mount("", "/", "", syscall.MS_REC|syscall.MS_PRIVATE, ""); err != nil {
		t.Fatalf("make mounts private: %v", err)
	}
	requireIsolated(t)
	testutil.Run(t, "ip", "link", "set", "lo", "up")
	// The host's resolver is the test namespace's own: resolvers are the
	// policy's choice, not the guest's, and may be local.
	testutil.Run(t, "ip", "addr", "add", "192.0.2.53/32", "dev", "lo")
	originsNetns = fmt.Sprintf("nporigins%d", os.Getpid())
	testutil.Run(t, "ip", "netns", "add", originsNetns)
	t.Cleanup(func() { exec.Command("ip", "netns", "del", originsNetns).Run() })
	testutil.Run(t, "ip", "link", "add", "npup0", "type", "veth", "peer", "name", "npup1", "netns", originsNetns)
	for _, c := range [][]string{
		{"ip", "link", "set", "npup0", "up"},
		{"ip", "addr", "add", hostAddr.String() + "/30", "dev", "npup0"},
		{"ip", "-6", "addr", "add", "fd99::1/64", "dev", "npup0", "nodad"},
		{"ip", "route", "add", "198.51.100.0/24", "via", "10.255.0.2"},
		{"ip", "route", "add", "203.0.113.0/24", "via", "10.255.0.2"},
		{"ip", "-6", "route", "add", "2001:db8::/32", "via", "fd99::2"},
	} {
		testutil.Run(t, c[0], c[1:]...)
	}
	for _, c := range [][]string{
		{"ip", "link", "set", "lo", "up"},
		{"ip", "link", "set", "npup1", "up"},
		{"ip", "addr", "add", "10.255.0.2/30", "dev", "npup1"},
		{"ip", "-6", "addr", "add", "fd99::2/64", "dev", "npup1", "nodad"},
		{"ip", "addr", "add", "198.51.100.10/32", "dev", "lo"},
		{"ip", "addr", "add", "198.51.100.11/32", "dev", "lo"},
		{"ip", "addr", "add", "203.0.113.10/32", "dev", "lo"},
		{"ip", "-6", "addr", "add", "2001:db8::10/128", "dev", "lo", "nodad"},
	} {
		testutil.Run(t, "ip", append([]string{"netns", "exec", originsNetns}, c...)...)
	}
	requireIsolated(t)

	h := &harness{policy: &testPolicy{}, netns: fmt.Sprintf("nptest%d", os.Getpid())}
	h.baseline = runtime.NumGoroutine()
	h.startOrigins(t)
	for _, start := range extraOrigins {
		start(t, h)
	}
	h.baseline = runtime.NumGoroutine()

	testutil.Run(t, "ip", "netns", "add", h.netns)
	t.Cleanup(func() { exec.Command("ip", "netns", "del", h.netns).Run() })
	tap := openTAP(t, "nptap0")
	testutil.Run(t, "ip", "link", "set", "nptap0", "netns", h.netns)
	for _, c := range [][]string{
		{"ip", "link", "set", "lo", "up"},
		{"ip", "link", "set", "nptap0", "mtu", "1500", "up"},
		{"ip", "addr", "add", "10.0.2.2/24", "dev", "nptap0"},
		{"ip", "route", "add", "default", "via", "10.0.2.1"},
		{"ip", "-6", "addr", "add", "fd00:5a4e:6c00::2/64", "dev", "nptap0", "nodad"},
		{"ip", "-6", "route", "add", "default", "via", "fd00:5a4e:6c00::1"},
	} {
		testutil.Run(t, "ip", append([]string{"netns", "exec", h.netns}, c...)...)
	}

	// HTTP interception, trusting only the origins' own test CAs upstream.
	ca, err := httpproxy.NewCA(httpproxy.CAOptions{})
	if err != nil {
		t.Fatal(err)
	}
	h.interceptCAFile = filepath.Join(t.TempDir(), "intercept-ca.pem")
	if err := os.WriteFile(h.interceptCAFile, ca.CertPEM(), 0o644); err != nil {
		t.Fatal(err)
	}
	proxy, err := httpproxy.New(httpproxy.Config{CA: ca, ExtraRootsPEM: h.upstreamRoots, NoSystemRoots: true})
	if err != nil {
		t.Fatal(err)
	}
	// The guest's own resolver is the stack's: ip netns exec bind-mounts
	// this over /etc/resolv.conf.
	resolvDir := filepath.Join("/etc/netns", h.netns)
	if err := os.MkdirAll(resolvDir, 0o755); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		os.RemoveAll(resolvDir)
		os.Remove("/etc/netns") // only if empty: other namespaces may use it
	})
	if err := os.WriteFile(filepath.Join(resolvDir, "resolv.conf"), []byte("nameserver 10.0.2.1\n"), 0o644); err != nil {
		t.Fatal(err)
	}

	st, err := netpolicy.New(netpolicy.Config{
		Policy:         h.policy,
		MTU:            1500,
		HostLookup:     hostLookupVia(resolver),
		UDPIdleTimeout: 2 * time.Second,
		HTTP:           proxy,
	})
	if err != nil {
		t.Fatal(err)
	}
	h.stack = st
	stackEnd, vmEnd := testutil.ConnPair(t)
	ctx, cancel := context.WithCancel(context.Background())
	h.cancel = cancel
	h.served = make(chan error, 1)
	go func() { h.served <- st.Serve(ctx, stackEnd) }()
	go bridgeTAP(tap, vmEnd)
	return h
}

func (h *harness) close(t *testing.T) {
	if err := h.stack.Close(); err != nil {
		t.Errorf("Close: %v", err)
	}
	if err := <-h.served; err != nil {
		t.Errorf("Serve: %v", err)
	}
	h.cancel()
}

// hostLookupVia is the host's own resolution (Go's resolver: the hosts
// file, then a nameserver) with the test's resolver as that nameserver, so
// that nothing is asked of the machine's real resolvers.
func hostLookupVia(ns netip.Addr) dns.LookupFunc {
	r := &net.Resolver{PreferGo: true, Dial: func(ctx context.Context, network, _ string) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, network, netip.AddrPortFrom(ns, 53).String())
	}}
	return func(ctx context.Context, name string) ([]netip.Addr, error) {
		return r.LookupNetIP(ctx, "ip", name)
	}
}

// openTAP creates a TAP device (no packet info header) in this namespace.
func openTAP(t *testing.T, name string) *os.File {
	fd, err := unix.Open("/dev/net/tun", unix.O_RDWR|unix.O_NONBLOCK|unix.O_CLOEXEC, 0)
	if err != nil {
		t.Skipf("no TAP support: %v", err)
	}
	ifr, err := unix.NewIfreq(name)
	if err != nil {
		t.Fatal(err)
	}
	ifr.SetUint16(unix.IFF_TAP | unix.IFF_NO_PI)
	if err := unix.IoctlIfreq(fd, unix.TUNSETIFF, ifr); err != nil {
		unix.Close(fd)
		t.Fatalf("TUNSETIFF: %v", err)
	}
	return os.NewFile(uintptr(fd), name)
}

// bridgeTAP plays the VMM: each TAP frame goes to vm length-prefixed, and
// back. It returns when either side closes, closing both.
func bridgeTAP(tap *os.File, vm net.Conn) {
	defer tap.Close()
	defer vm.Close()
	done := make(chan struct{})
	go func() {
		defer close(done)
		buf := make([]byte, link.MaxFrameSize(1500))
		for {
			n, err := link.ReadFrame(vm, buf)
			if err != nil {
				tap.Close()
				return
			}
			tap.Write(buf[:n])
		}
	}()
	buf := make([]byte, 1<<16)
	for {
		n, err := tap.Read(buf)
		if err != nil {
			break
		}
		if link.WriteFrame(vm, buf[:n]) != nil {
			break
		}
	}
	vm.Close()
	<-done
}

// guest runs a command in the guest namespace and returns its trimmed
// output; it fails the test if the command fails.
func (h *harness) guest(t *testing.T, args ...string) string {
	t.Helper()
	return h.guestIn(t, "", args...)
}

func (h *harness) guestIn(t *testing.T, stdin string, args ...string) string {
	t.Helper()
	out, err := h.guestRun(stdin, args...)
	if err != nil {
		t.Fatalf("%s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return out
}

func (h *harness) guestErr(args ...string) (string, error) { return h.guestRun("", args...) }

func (h *harness) guestRun(stdin string, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, "ip", append([]string{"netns", "exec", h.netns}, args...)...)
	cmd.Stdin = strings.NewReader(stdin)
	out, err := cmd.CombinedOutput()
	return strings.TrimSpace(string(out)), err
}

// originsNetns names the namespace of the origins (newHarness sets it).
var originsNetns string

// inOrigins runs f in the origins' namespace: the sockets f opens live there.
func inOrigins(t *testing.T, f func()) {
	if err := netns.Do("/run/netns/"+originsNetns, f); err != nil {
		t.Fatal(err)
	}
}

// listenOrigin listens on addr in the origins' namespace until the test ends.
func listenOrigin(t *testing.T, network string, addr netip.AddrPort) net.Listener {
	var l net.Listener
	var err error
	inOrigins(t, func() { l, err = net.Listen(network, addr.String()) })
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	return l
}

// listenOriginPacket opens a datagram socket on addr in the origins'
// namespace until the test ends.
func listenOriginPacket(t *testing.T, addr netip.AddrPort) net.PacketConn {
	var pc net.PacketConn
	var err error
	inOrigins(t, func() { pc, err = net.ListenPacket("udp", addr.String()) })
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { pc.Close() })
	return pc
}

// startOrigins starts the servers the guest's flows land on.
func (h *harness) startOrigins(t *testing.T) {
	listen := func(a netip.Addr, port uint16) net.Listener {
		return listenOrigin(t, "tcp", netip.AddrPortFrom(a, port))
	}
	serve := func(l net.Listener, handle func(net.Conn)) {
		go func() {
			for {
				c, err := l.Accept()
				if err != nil {
					return
				}
				go func() {
					defer c.Close()
					handle(c)
				}()
			}
		}()
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, "hello from origin")
	})}
	go srv.Serve(listen(originA, 80))
	t.Cleanup(func() { srv.Close() })
	// Echo after the client's EOF: proves half-close both ways.
	echo := func(c net.Conn) {
		b, _ := io.ReadAll(c)
		c.Write(b)
	}
	serve(listen(originA, 7), echo)
	serve(listen(origin6, 7), echo)
	serve(listen(originA, 22), func(c net.Conn) { io.WriteString(c, "SSH-2.0-origin\r\n") })
	for _, port := range []uint16{80, 81} {
		serve(listen(originB, port), func(net.Conn) { h.deniedAccepts.Add(1) })
	}

	pc := listenOriginPacket(t, netip.AddrPortFrom(originA, 7))
	go func() {
		buf := make([]byte, 1<<16)
		for {
			n, from, err := pc.ReadFrom(buf)
			if err != nil {
				return
			}
			pc.WriteTo(buf[:n], from)
		}
	}()

	zone := map[string][]string{
		"origin.example.test.":    {"origin.example.test. 60 IN A 198.51.100.10"},
		"www.example.test.":       {"www.example.test. 60 IN CNAME origin.example.test.", "origin.example.test. 60 IN A 198.51.100.10"},
		"v6.example.test.":        {"v6.example.test. 60 IN AAAA 2001:db8::10"},
		"api.example.test.":       {"api.example.test. 60 IN A 198.51.100.10"},
		"untrusted.example.test.": {"untrusted.example.test. 60 IN A 198.51.100.10"},
	}
	hostDNS := mdns.HandlerFunc(func(w mdns.ResponseWriter, q *mdns.Msg) {
		r := new(mdns.Msg)
		r.SetReply(q)
		for _, s := range zone[strings.ToLower(q.Question[0].Name)] {
			rr, _ := mdns.NewRR(s)
			if rr.Header().Rrtype == q.Question[0].Qtype || rr.Header().Rrtype == mdns.TypeCNAME {
				r.Answer = append(r.Answer, rr)
			}
		}
		w.WriteMsg(r)
	})
	customDNS := mdns.HandlerFunc(func(w mdns.ResponseWriter, q *mdns.Msg) {
		h.customQueries.Add(1)
		r := new(mdns.Msg)
		r.SetReply(q)
		r.Answer = []mdns.RR{&mdns.A{Hdr: mdns.RR_Header{Name: q.Question[0].Name, Rrtype: mdns.TypeA, Class: mdns.ClassINET, Ttl: 60}, A: customIP.AsSlice()}}
		w.WriteMsg(r)
	})
	for _, d := range []struct {
		addr    netip.Addr
		handler mdns.Handler
		origin  bool
	}{{resolver, hostDNS, false}, {originB, customDNS, true}} {
		for _, network := range []string{"udp", "tcp"} {
			started := make(chan struct{})
			addr := netip.AddrPortFrom(d.addr, 53)
			s := &mdns.Server{Addr: addr.String(), Net: network, Handler: d.handler, NotifyStartedFunc: func() { close(started) }}
			if d.origin && network == "udp" {
				s.PacketConn = listenOriginPacket(t, addr)
			} else if d.origin {
				s.Listener = listenOrigin(t, "tcp", addr)
			}
			errc := make(chan error, 1)
			go func() {
				if d.origin {
					errc <- s.ActivateAndServe()
				} else {
					errc <- s.ListenAndServe()
				}
			}()
			select {
			case <-started:
			case err := <-errc:
				t.Fatalf("dns server %s/%s: %v", d.addr, network, err)
			}
			t.Cleanup(func() { s.Shutdown() })
		}
	}
}

// testPolicy records every flow and decides by destination.
type testPolicy struct {
	denyDNS atomic.Bool
	// dnsWhen, when set, grants a DNS query only if it matches.
	dnsWhen atomic.Pointer[func(netpolicy.Flow) bool]
	// http, when set, decides the TCP flows it returns a decision for.
	http atomic.Pointer[func(netpolicy.Flow) *netpolicy.Decision]

	mu        sync.Mutex
	flows     []netpolicy.Flow
	resolvers []netip.AddrPort
}

func (p *testPolicy) Decide(_ context.Context, f netpolicy.Flow) (netpolicy.Decision, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.flows = append(p.flows, f)
	switch {
	case f.DNS && p.denyDNS.Load():
		return netpolicy.Decision{Action: netpolicy.Deny}, nil
	case f.DNS && p.dnsWhen.Load() != nil && !(*p.dnsWhen.Load())(f):
		return netpolicy.Decision{Action: netpolicy.Deny}, nil
	case f.DNS:
		return netpolicy.Decision{Action: netpolicy.AcceptDNS, Resolvers: p.resolvers}, nil
	case f.Dst == netip.AddrPortFrom(originB, 81):
		return netpolicy.Decision{}, errors.New("policy failed")
	case p.http.Load() != nil && (*p.http.Load())(f) != nil:
		return *(*p.http.Load())(f), nil
	case f.Dst == netip.AddrPortFrom(originA, 80):
		return netpolicy.Decision{Action: netpolicy.AcceptHTTP}, nil
	case f.Dst.Addr() == originA || f.Dst.Addr() == origin6:
		return netpolicy.Decision{Action: netpolicy.Accept}, nil
	case slices.Contains(hostAddrs, f.Dst.Addr()):
		// A policy that allows these (by class, or everything) must
		// still not reach the host: the Stack refuses them first.
		return netpolicy.Decision{Action: netpolicy.Accept}, nil
	}
	return netpolicy.Decision{Action: netpolicy.Deny}, nil
}

func (p *testPolicy) setResolvers(r []netip.AddrPort) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.resolvers = r
}

func (p *testPolicy) count() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.flows)
}

func (p *testPolicy) since(n int) []netpolicy.Flow {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]netpolicy.Flow(nil), p.flows[n:]...)
}

func (p *testPolicy) wantFlow(t *testing.T, match func(netpolicy.Flow) bool) {
	t.Helper()
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, f := range p.flows {
		if match(f) {
			return
		}
	}
	t.Fatalf("no matching flow among %+v", p.flows)
}
