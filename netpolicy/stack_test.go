package netpolicy_test

import (
	"context"
	"errors"
	"net"
	"runtime"
	"testing"
	"time"

	"github.com/torkbot/sandbox/netpolicy"
	"github.com/torkbot/sandbox/netpolicy/link"
)

// refuseDialer fails the test if anything is dialed: no traffic may leave.
type refuseDialer struct{ t testing.TB }

func (d refuseDialer) DialContext(_ context.Context, network, address string) (net.Conn, error) {
	d.t.Errorf("unexpected dial %s %s", network, address)
	return nil, errors.New("refused by test")
}

func denyAll(context.Context, netpolicy.Flow) (netpolicy.Decision, error) {
	return netpolicy.Decision{Action: netpolicy.Deny}, nil
}

func TestNewValidates(t *testing.T) {
	for _, cfg := range []netpolicy.Config{
		{},
		{Policy: netpolicy.PolicyFunc(denyAll), MTU: 100},
		{Policy: netpolicy.PolicyFunc(denyAll), MTU: 70000},
	} {
		if _, err := netpolicy.New(cfg); err == nil {
			t.Errorf("New(%+v) succeeded", cfg)
		}
	}
}

func TestServeLifecycle(t *testing.T) {
	baseline := runtime.NumGoroutine()
	s, err := netpolicy.New(netpolicy.Config{Policy: netpolicy.PolicyFunc(denyAll), Dialer: refuseDialer{t}})
	if err != nil {
		t.Fatal(err)
	}
	// Peer closes: Serve returns nil.
	host, guest := net.Pipe()
	errc := make(chan error, 1)
	go func() { errc <- s.Serve(context.Background(), host) }()
	guest.Close()
	if err := <-errc; err != nil {
		t.Fatalf("Serve after peer close = %v", err)
	}
	// ctx ends: Serve returns ctx.Err().
	host, guest = net.Pipe()
	defer guest.Close()
	ctx, cancel := context.WithCancel(context.Background())
	go func() { errc <- s.Serve(ctx, host) }()
	cancel()
	if err := <-errc; !errors.Is(err, context.Canceled) {
		t.Fatalf("Serve after cancel = %v", err)
	}
	// Close ends a running Serve with nil and refuses later ones.
	host, guest2 := net.Pipe()
	defer guest2.Close()
	go func() { errc <- s.Serve(context.Background(), host) }()
	time.Sleep(10 * time.Millisecond)
	s.Close()
	if err := <-errc; err != nil {
		t.Fatalf("Serve after Close = %v", err)
	}
	host, _ = net.Pipe()
	if err := s.Serve(context.Background(), host); !errors.Is(err, netpolicy.ErrClosed) {
		t.Fatalf("Serve after Close = %v, want ErrClosed", err)
	}
	waitGoroutines(t, baseline)
}

func waitGoroutines(t testing.TB, baseline int) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for runtime.NumGoroutine() > baseline && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if n := runtime.NumGoroutine(); n > baseline {
		buf := make([]byte, 1<<20)
		t.Fatalf("%d goroutines, baseline %d:\n%s", n, baseline, buf[:runtime.Stack(buf, true)])
	}
}

// FuzzGuestFrame feeds arbitrary guest frames to a deny-all stack: nothing
// may crash, and nothing may be dialed.
func FuzzGuestFrame(f *testing.F) {
	// An Ethernet/IPv4/TCP SYN to 127.0.0.1:80 and an ARP request for the gateway.
	f.Add([]byte("\x5a\x4e\x6c\x00\x00\x01\x52\x54\x00\x12\x34\x56\x08\x00" +
		"\x45\x00\x00\x28\x00\x01\x00\x00\x40\x06\x00\x00\x0a\x00\x02\x02\x7f\x00\x00\x01" +
		"\x30\x39\x00\x50\x00\x00\x00\x01\x00\x00\x00\x00\x50\x02\xff\xff\x00\x00\x00\x00"))
	f.Add([]byte("\xff\xff\xff\xff\xff\xff\x52\x54\x00\x12\x34\x56\x08\x06" +
		"\x00\x01\x08\x00\x06\x04\x00\x01\x52\x54\x00\x12\x34\x56\x0a\x00\x02\x02\x00\x00\x00\x00\x00\x00\x0a\x00\x02\x01"))
	f.Fuzz(func(t *testing.T, frame []byte) {
		if len(frame) > link.MaxFrameSize(1500) {
			return
		}
		s, err := netpolicy.New(netpolicy.Config{Policy: netpolicy.PolicyFunc(denyAll), Dialer: refuseDialer{t}, MTU: 1500})
		if err != nil {
			t.Fatal(err)
		}
		host, guest := net.Pipe()
		errc := make(chan error, 1)
		go func() { errc <- s.Serve(context.Background(), host) }()
		go func() {
			for { // drain replies
				if _, err := guest.Read(make([]byte, 2048)); err != nil {
					return
				}
			}
		}()
		link.WriteFrame(guest, frame)
		link.WriteFrame(guest, frame)
		guest.Close()
		if err := <-errc; err != nil {
			t.Fatalf("Serve = %v", err)
		}
		s.Close()
	})
}
