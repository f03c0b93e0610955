package httpproxy_test

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/torkbot/sandbox/netpolicy/httpproxy"
)

type refuseDialer struct{}

func (refuseDialer) DialContext(context.Context, string, string) (net.Conn, error) {
	return nil, errors.New("fuzz: no upstream")
}

// FuzzServeConn feeds guest-controlled bytes to ServeConn (sniffing, TLS
// record start, HTTP/1 request parsing). Nothing may panic or hang, every
// upstream dial is refused, and input that is neither a TLS record nor an
// HTTP/1 request line must be closed without a byte written.
func FuzzServeConn(f *testing.F) {
	for _, s := range []string{
		"GET / HTTP/1.1\r\nHost: example.com\r\n\r\n",
		"POST /x HTTP/1.1\r\nHost: example.com\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
		"GET / HTTP/1.1\r\nHost: evil.test\r\n\r\nGET / HTTP/1.1\r\n\r\n",
		"CONNECT example.com:443 HTTP/1.1\r\n\r\n",
		"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
		"\x16\x03\x01\x00\x05hello",
		"SSH-2.0-x\r\n",
		"",
		"G",
	} {
		f.Add([]byte(s))
	}
	ca, err := httpproxy.NewCA(httpproxy.CAOptions{})
	if err != nil {
		f.Fatal(err)
	}
	p, err := httpproxy.New(httpproxy.Config{
		CA:            ca,
		Dialer:        refuseDialer{},
		NoSystemRoots: true,
		SniffTimeout:  100 * time.Millisecond,
		IdleTimeout:   100 * time.Millisecond,
	})
	if err != nil {
		f.Fatal(err)
	}
	flow := httpproxy.Flow{
		Src:      netip.MustParseAddrPort("10.0.2.2:40000"),
		Dst:      netip.MustParseAddrPort("192.0.2.1:80"),
		Hostname: "example.com",
		Middleware: httpproxy.MiddlewareFunc(func(ctx context.Context, r *httpproxy.Request) error {
			if r.Method == "DELETE" {
				return errors.New("denied")
			}
			r.Header.Set("Authorization", "x")
			return nil
		}),
	}
	f.Fuzz(func(t *testing.T, in []byte) {
		guest, host := net.Pipe()
		done := make(chan error, 1)
		go func() { done <- p.ServeConn(context.Background(), host, flow) }()
		// A request whose body never completes waits (net/http reads up
		// to 256 KiB of an unread body before answering), so the guest
		// gives up after a second.
		guest.SetDeadline(time.Now().Add(time.Second))
		go func() {
			guest.Write(in)
			// Half-close is not available on net.Pipe; the read side
			// ends when ServeConn closes or idles out.
		}()
		out, _ := io.ReadAll(guest)
		guest.Close()
		err := <-done
		if errors.Is(err, httpproxy.ErrNotHTTP) && len(out) != 0 {
			t.Fatalf("not-HTTP input %q got a reply %q", in, out)
		}
		if bytes.Contains(out, []byte("Authorization")) {
			t.Fatalf("reply leaks a request header: %q", out)
		}
	})
}
