package httpproxy_test

import (
	"bufio"
	"context"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/torkbot/sandbox/netpolicy/httpproxy"
)

// All traffic in these tests stays on loopback: origins listen on
// 127.0.0.1 and loopbackDialer refuses any other address.

const secret = "Bearer s3cr3t-token"

type loopbackDialer struct {
	t     testing.TB
	dials atomic.Int32
}

func (d *loopbackDialer) DialContext(ctx context.Context, network, address string) (net.Conn, error) {
	ap, err := netip.ParseAddrPort(address)
	if err != nil || !ap.Addr().IsLoopback() {
		d.t.Errorf("dial to non-loopback %s %q refused", network, address)
		return nil, fmt.Errorf("test dialer: refusing %q", address)
	}
	d.dials.Add(1)
	var nd net.Dialer
	return nd.DialContext(ctx, network, address)
}

// origin is an httptest server that records what reached it.
type origin struct {
	*httptest.Server
	mu       sync.Mutex
	requests []*http.Request
}

func (o *origin) count() int {
	o.mu.Lock()
	defer o.mu.Unlock()
	return len(o.requests)
}

func (o *origin) last() *http.Request {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.requests[len(o.requests)-1]
}

func (o *origin) addr() netip.AddrPort {
	return netip.MustParseAddrPort(o.Listener.Addr().String())
}

// originHandler answers according to the path. It never echoes request
// headers.
func originHandler(w http.ResponseWriter, r *http.Request) {
	switch r.URL.Path {
	case "/echo-body":
		h := sha256.New()
		n, err := io.Copy(h, r.Body)
		if err != nil {
			http.Error(w, err.Error(), 500)
			return
		}
		fmt.Fprintf(w, "%d %s", n, hex.EncodeToString(h.Sum(nil)))
	case "/stream":
		// A large chunked response written in pieces.
		chunk := strings.Repeat("x", 64<<10)
		for i := 0; i < 64; i++ {
			io.WriteString(w, chunk)
			w.(http.Flusher).Flush()
		}
	case "/nocontent":
		w.WriteHeader(http.StatusNoContent)
	case "/notmodified":
		w.WriteHeader(http.StatusNotModified)
	case "/h2c":
		// An origin that takes any h2c upgrade, then echoes raw bytes
		// (the HTTP/2 requests a guest would send past the middleware).
		if !strings.Contains(strings.ToLower(r.Header.Get("Upgrade")), "h2c") {
			fmt.Fprintf(w, "plain %s", r.Proto)
			return
		}
		switchProtocols(w, "h2c")
	case "/ws":
		// A protocol upgrade: 101, then an echo of raw bytes.
		if !strings.EqualFold(r.Header.Get("Upgrade"), "websocket") {
			http.Error(w, "upgrade required", http.StatusUpgradeRequired)
			return
		}
		switchProtocols(w, "websocket")
	default:
		w.Header().Set("X-Origin-Proto", r.Proto)
		fmt.Fprintf(w, "hello %s %s", r.Method, r.URL.Path)
	}
}

// switchProtocols answers 101 for protocol, then echoes raw bytes.
func switchProtocols(w http.ResponseWriter, protocol string) {
	c, brw, err := http.NewResponseController(w).Hijack()
	if err != nil {
		return
	}
	defer c.Close()
	brw.WriteString("HTTP/1.1 101 Switching Protocols\r\nUpgrade: " + protocol + "\r\nConnection: Upgrade\r\n\r\n")
	brw.Flush()
	io.Copy(c, brw)
}

func newOrigin(t *testing.T, tlsOn, h2 bool, cert *tls.Certificate) *origin {
	t.Helper()
	o := &origin{}
	o.Server = httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		o.mu.Lock()
		o.requests = append(o.requests, r.Clone(context.Background()))
		o.mu.Unlock()
		originHandler(w, r)
	}))
	o.Server.Config.ErrorLog = log.New(io.Discard, "", 0)
	if tlsOn {
		o.EnableHTTP2 = h2
		if cert != nil {
			o.TLS = &tls.Config{Certificates: []tls.Certificate{*cert}}
		}
		o.StartTLS()
	} else {
		o.Start()
	}
	t.Cleanup(o.Close)
	return o
}

func originRootsPEM(o *origin) []byte {
	if o.Certificate() == nil {
		return nil
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: o.Certificate().Raw})
}

// harness is a loopback listener standing in for the netpolicy stack: it
// hands each accepted connection to ServeConn with flowFor's Flow.
type harness struct {
	t      *testing.T
	ca     *httpproxy.CA
	proxy  *httpproxy.Proxy
	dialer *loopbackDialer
	ln     net.Listener
	accept atomic.Int32
	mu     sync.Mutex
	errs   []error
}

func newHarness(t *testing.T, dst netip.AddrPort, hostname string, mw httpproxy.Middleware, extraRoots []byte) *harness {
	t.Helper()
	ca, err := httpproxy.NewCA(httpproxy.CAOptions{})
	if err != nil {
		t.Fatal(err)
	}
	h := &harness{t: t, ca: ca, dialer: &loopbackDialer{t: t}}
	h.proxy, err = httpproxy.New(httpproxy.Config{
		CA:            ca,
		Dialer:        h.dialer,
		ExtraRootsPEM: extraRoots,
		NoSystemRoots: true,
		SniffTimeout:  5 * time.Second,
	})
	if err != nil {
		t.Fatal(err)
	}
	h.ln, err = net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := h.ln.Accept()
			if err != nil {
				return
			}
			h.accept.Add(1)
			src := netip.MustParseAddrPort(c.RemoteAddr().String())
			wg.Add(1)
			go func() {
				defer wg.Done()
				err := h.proxy.ServeConn(ctx, c, httpproxy.Flow{Src: src, Dst: dst, Hostname: hostname, Middleware: mw})
				h.mu.Lock()
				h.errs = append(h.errs, err)
				h.mu.Unlock()
			}()
		}
	}()
	t.Cleanup(func() {
		h.ln.Close()
		cancel()
		wg.Wait()
	})
	return h
}

func (h *harness) serveErrs() []error {
	h.mu.Lock()
	defer h.mu.Unlock()
	return append([]error(nil), h.errs...)
}

// client is a guest-side HTTP client that dials the harness whatever the
// URL says and trusts only the proxy's CA.
func (h *harness) client(serverName string, h2 bool) *http.Client {
	roots := x509.NewCertPool()
	roots.AppendCertsFromPEM(h.ca.CertPEM())
	tr := &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "tcp", h.ln.Addr().String())
		},
		TLSClientConfig:   &tls.Config{RootCAs: roots, ServerName: serverName},
		ForceAttemptHTTP2: h2,
	}
	if !h2 {
		tr.TLSNextProto = map[string]func(string, *tls.Conn) http.RoundTripper{}
		tr.TLSClientConfig.NextProtos = []string{"http/1.1"}
	}
	h.t.Cleanup(tr.CloseIdleConnections)
	return &http.Client{Transport: tr, Timeout: 30 * time.Second}
}

func injector(seen chan<- *httpproxy.Request) httpproxy.Middleware {
	return httpproxy.MiddlewareFunc(func(ctx context.Context, r *httpproxy.Request) error {
		if r.Destination.Hostname == "example.com" {
			r.Header.Set("Authorization", secret)
		}
		if seen != nil {
			c := *r
			c.Header = r.Header.Clone()
			select {
			case seen <- &c:
			default:
			}
		}
		return nil
	})
}

func get(t *testing.T, c *http.Client, url string) (*http.Response, string) {
	t.Helper()
	resp, err := c.Get(url)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("GET %s: reading body: %v", url, err)
	}
	return resp, string(b)
}

func assertNoSecret(t *testing.T, resp *http.Response, body string) {
	t.Helper()
	var sb strings.Builder
	resp.Header.Write(&sb)
	if strings.Contains(sb.String()+body, "s3cr3t") {
		t.Errorf("guest saw the injected secret: %s%s", sb.String(), body)
	}
}

func TestHTTPSInjection(t *testing.T) {
	for _, tc := range []struct {
		name           string
		guestH2        bool
		originH2       bool
		wantProtocol   string
		wantOriginProt string
	}{
		{"h2-to-h2", true, true, "h2", "HTTP/2.0"},
		{"h2-to-http1", true, false, "h2", "HTTP/1.1"},
		{"http1-to-h2", false, true, "http/1.1", "HTTP/2.0"},
		{"http1-to-http1", false, false, "http/1.1", "HTTP/1.1"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			o := newOrigin(t, true, tc.originH2, nil)
			seen := make(chan *httpproxy.Request, 1)
			h := newHarness(t, o.addr(), "example.com", injector(seen), originRootsPEM(o))
			resp, body := get(t, h.client("example.com", tc.guestH2), "https://example.com/path?q=1")
			if resp.StatusCode != 200 || body != "hello GET /path" {
				t.Fatalf("got %d %q", resp.StatusCode, body)
			}
			assertNoSecret(t, resp, body)
			if got := o.last().Header.Get("Authorization"); got != secret {
				t.Errorf("origin saw Authorization %q, want %q", got, secret)
			}
			if got := resp.Header.Get("X-Origin-Proto"); got != tc.wantOriginProt {
				t.Errorf("origin proto %q, want %q", got, tc.wantOriginProt)
			}
			r := <-seen
			if r.Protocol != tc.wantProtocol {
				t.Errorf("Protocol %q, want %q", r.Protocol, tc.wantProtocol)
			}
			if r.TLS == nil || r.TLS.SNI != "example.com" || r.TLS.ALPN != map[bool]string{true: "h2", false: "http/1.1"}[tc.guestH2] {
				t.Errorf("TLS %+v", r.TLS)
			}
			if want := fmt.Sprintf("https://example.com:%d/path?q=1", o.addr().Port()); r.URL.String() != want || r.Method != "GET" {
				t.Errorf("URL %s method %s", r.URL, r.Method)
			}
			d := r.Destination
			if d.Hostname != "example.com" || d.OriginalIP != o.addr().Addr() || d.OriginalPort != o.addr().Port() || !d.SourceIP.IsLoopback() || d.SourcePort == 0 {
				t.Errorf("Destination %+v", d)
			}
		})
	}
}

func TestCleartextInjection(t *testing.T) {
	o := newOrigin(t, false, false, nil)
	seen := make(chan *httpproxy.Request, 1)
	h := newHarness(t, o.addr(), "example.com", injector(seen), nil)
	resp, body := get(t, h.client("", false), "http://example.com/x")
	if resp.StatusCode != 200 || body != "hello GET /x" {
		t.Fatalf("got %d %q", resp.StatusCode, body)
	}
	assertNoSecret(t, resp, body)
	if got := o.last().Header.Get("Authorization"); got != secret {
		t.Errorf("origin saw Authorization %q", got)
	}
	if r := <-seen; r.Protocol != "http/1.1" || r.TLS != nil || r.URL.String() != fmt.Sprintf("http://example.com:%d/x", o.addr().Port()) {
		t.Errorf("request %+v", r)
	}
}

// TestURLNeverFromHost: the middleware's URL names the SNI, else the pin,
// else the original IP; a Host header the guest made up is never its
// authority, so a middleware keyed on url.hostname cannot be fooled.
func TestURLNeverFromHost(t *testing.T) {
	o := newOrigin(t, false, false, nil)
	seen := make(chan *httpproxy.Request, 1)
	h := newHarness(t, o.addr(), "", injector(seen), nil)
	req, err := http.NewRequest("GET", "http://example.com/spoofed", nil)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := h.client("", false).Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	r := <-seen
	if want := fmt.Sprintf("http://%s/spoofed", o.addr()); r.URL.String() != want {
		t.Errorf("URL %s, want %s (the original destination, not the Host header)", r.URL, want)
	}
	if r.Destination.Hostname != "" {
		t.Errorf("Hostname %q without a pin", r.Destination.Hostname)
	}
}

func TestMiddlewareErrorIs403(t *testing.T) {
	for _, h2 := range []bool{false, true} {
		t.Run(fmt.Sprint("h2=", h2), func(t *testing.T) {
			o := newOrigin(t, true, true, nil)
			deny := httpproxy.MiddlewareFunc(func(ctx context.Context, r *httpproxy.Request) error {
				r.Header.Set("Authorization", secret)
				return errors.New("no")
			})
			h := newHarness(t, o.addr(), "example.com", deny, originRootsPEM(o))
			resp, body := get(t, h.client("example.com", h2), "https://example.com/")
			if resp.StatusCode != 403 || body != "network policy denied\n" {
				t.Fatalf("got %d %q", resp.StatusCode, body)
			}
			assertNoSecret(t, resp, body)
			if o.count() != 0 || h.dialer.dials.Load() != 0 {
				t.Errorf("origin got %d requests, %d dials", o.count(), h.dialer.dials.Load())
			}
		})
	}
}

func TestUntrustedUpstreamIs502(t *testing.T) {
	otherCA, err := httpproxy.NewCA(httpproxy.CAOptions{})
	if err != nil {
		t.Fatal(err)
	}
	cert, err := otherCA.Leaf([]string{"example.com"}, []netip.Addr{netip.MustParseAddr("127.0.0.1")})
	if err != nil {
		t.Fatal(err)
	}
	o := newOrigin(t, true, true, cert)
	// The proxy trusts httptest's usual CA, not otherCA.
	trusted := newOrigin(t, true, false, nil)
	h := newHarness(t, o.addr(), "example.com", injector(nil), originRootsPEM(trusted))
	resp, body := get(t, h.client("example.com", true), "https://example.com/")
	if resp.StatusCode != 502 || body != "bad gateway: upstream certificate not trusted\n" {
		t.Fatalf("got %d %q", resp.StatusCode, body)
	}
	if o.count() != 0 {
		t.Errorf("untrusted origin got %d requests", o.count())
	}
}

func TestUnreachableIs502(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	dst := netip.MustParseAddrPort(ln.Addr().String())
	ln.Close()
	h := newHarness(t, dst, "example.com", injector(nil), nil)
	for _, url := range []string{"http://example.com/", "https://example.com/"} {
		resp, body := get(t, h.client("example.com", false), url)
		if resp.StatusCode != 502 || body != "bad gateway: upstream unreachable\n" {
			t.Errorf("%s: got %d %q", url, resp.StatusCode, body)
		}
	}
}

func TestNonHTTPIsClosed(t *testing.T) {
	o := newOrigin(t, false, false, nil)
	h := newHarness(t, o.addr(), "example.com", injector(nil), nil)
	for _, first := range []string{
		"SSH-2.0-OpenSSH_9.2\r\n",
		"\x00\x01\x02\x03",
		"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
		"get / HTTP/1.1\r\n\r\n",
		"\x16\x02\x00garbage",
	} {
		c, err := net.Dial("tcp", h.ln.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		c.SetDeadline(time.Now().Add(10 * time.Second))
		io.WriteString(c, first)
		b, err := io.ReadAll(c)
		c.Close()
		if len(b) != 0 || err != nil {
			t.Errorf("%q: got %q, %v; want closed without data", first, b, err)
		}
	}
	if o.count() != 0 || h.dialer.dials.Load() != 0 {
		t.Errorf("origin got %d requests, %d dials", o.count(), h.dialer.dials.Load())
	}
	for _, err := range h.serveErrs() {
		if !errors.Is(err, httpproxy.ErrNotHTTP) {
			t.Errorf("ServeConn: %v, want ErrNotHTTP", err)
		}
	}
}

func TestAuthorityRule(t *testing.T) {
	for _, tc := range []struct {
		name     string
		pin      string
		tls      bool
		sni      string
		host     string
		wantCode int
		wantSeen bool // origin gets the injected header
	}{
		{"pin, SNI matches", "example.com", true, "example.com", "example.com", 200, true},
		{"pin, SNI case and dot", "example.com", true, "Example.COM.", "example.com", 200, true},
		{"pin, SNI other", "example.com", true, "evil.test", "evil.test", 421, false},
		{"pin, SNI ok, Host other", "example.com", true, "example.com", "evil.test", 421, false},
		{"pin, no SNI, Host is the IP", "example.com", true, "", "127.0.0.1", 200, true},
		{"pin, cleartext, Host other", "example.com", false, "", "evil.test", 421, false},
		{"pin, cleartext, Host with port", "example.com", false, "", "example.com:8080", 200, true},
		{"no pin, SNI, Host other", "", true, "example.com", "evil.test", 421, false},
		{"no pin, cleartext, any Host", "", false, "", "anything.test", 200, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			o := newOrigin(t, tc.tls, false, nil)
			h := newHarness(t, o.addr(), tc.pin, injector(nil), originRootsPEM(o))
			c, err := net.Dial("tcp", h.ln.Addr().String())
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			c.SetDeadline(time.Now().Add(10 * time.Second))
			if tc.tls {
				roots := x509.NewCertPool()
				roots.AppendCertsFromPEM(h.ca.CertPEM())
				cfg := &tls.Config{RootCAs: roots, ServerName: tc.sni, NextProtos: []string{"http/1.1"}}
				if tc.sni == "" {
					cfg.ServerName = "127.0.0.1" // no SNI is sent for an address
				}
				tc := tls.Client(c, cfg)
				if err := tc.Handshake(); err != nil {
					t.Fatalf("handshake: %v", err)
				}
				c = tc
			}
			fmt.Fprintf(c, "GET /a HTTP/1.1\r\nHost: %s\r\nConnection: close\r\n\r\n", tc.host)
			resp, err := http.ReadResponse(bufio.NewReader(c), nil)
			if err != nil {
				t.Fatal(err)
			}
			body, _ := io.ReadAll(resp.Body)
			if resp.StatusCode != tc.wantCode {
				t.Fatalf("got %d %q, want %d", resp.StatusCode, body, tc.wantCode)
			}
			if tc.wantCode != 200 {
				if o.count() != 0 {
					t.Errorf("origin got %d requests", o.count())
				}
				return
			}
			got := o.last()
			if seen := got.Header.Get("Authorization") == secret; seen != tc.wantSeen {
				t.Errorf("origin saw credentials: %v, want %v", seen, tc.wantSeen)
			}
			if got.Host != tc.host {
				t.Errorf("origin Host %q, want %q", got.Host, tc.host)
			}
		})
	}
}

func TestLargeStreamingBodies(t *testing.T) {
	for _, h2 := range []bool{false, true} {
		t.Run(fmt.Sprint("h2=", h2), func(t *testing.T) {
			o := newOrigin(t, true, true, nil)
			h := newHarness(t, o.addr(), "example.com", injector(nil), originRootsPEM(o))
			c := h.client("example.com", h2)

			// Chunked upload of unknown length, with Expect: 100-continue.
			const size = 16 << 20
			pr, pw := io.Pipe()
			sum := sha256.New()
			go func() {
				buf := make([]byte, 32<<10)
				for i := range buf {
					buf[i] = byte(i)
				}
				for n := 0; n < size; n += len(buf) {
					sum.Write(buf)
					if _, err := pw.Write(buf); err != nil {
						return
					}
				}
				pw.Close()
			}()
			req, _ := http.NewRequest("POST", "https://example.com/echo-body", pr)
			req.Header.Set("Expect", "100-continue")
			resp, err := c.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			want := fmt.Sprintf("%d %s", size, hex.EncodeToString(sum.Sum(nil)))
			if resp.StatusCode != 200 || string(b) != want {
				t.Fatalf("got %d %q, want %q", resp.StatusCode, b, want)
			}
			// Large streamed download.
			resp, body := get(t, c, "https://example.com/stream")
			if resp.StatusCode != 200 || len(body) != 64*64<<10 {
				t.Fatalf("stream: %d, %d bytes", resp.StatusCode, len(body))
			}
		})
	}
}

func TestKeepAlive(t *testing.T) {
	o := newOrigin(t, true, false, nil)
	h := newHarness(t, o.addr(), "example.com", injector(nil), originRootsPEM(o))
	c := h.client("example.com", false)
	for i := 0; i < 5; i++ {
		for _, tc := range []struct {
			method, path string
			code         int
			body         string
		}{
			{"GET", "/k", 200, "hello GET /k"},
			{"HEAD", "/k", 200, ""},
			{"GET", "/nocontent", 204, ""},
			{"GET", "/notmodified", 304, ""},
		} {
			req, _ := http.NewRequest(tc.method, "https://example.com"+tc.path, nil)
			resp, err := c.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != tc.code || string(b) != tc.body {
				t.Fatalf("%s %s: got %d %q", tc.method, tc.path, resp.StatusCode, b)
			}
		}
	}
	if n := h.accept.Load(); n != 1 {
		t.Errorf("guest opened %d connections, want 1 (keep-alive)", n)
	}
	if n := o.count(); n != 20 {
		t.Errorf("origin got %d requests, want 20", n)
	}
}

func TestWebSocketUpgradeAfterMiddleware(t *testing.T) {
	for _, tlsOn := range []bool{false, true} {
		t.Run(fmt.Sprint("tls=", tlsOn), func(t *testing.T) {
			o := newOrigin(t, tlsOn, false, nil)
			seen := make(chan *httpproxy.Request, 1)
			h := newHarness(t, o.addr(), "example.com", injector(seen), originRootsPEM(o))
			c, err := net.Dial("tcp", h.ln.Addr().String())
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			if tlsOn {
				roots := x509.NewCertPool()
				roots.AppendCertsFromPEM(h.ca.CertPEM())
				// ALPN http/1.1: upgrades are an HTTP/1.1 mechanism.
				tc := tls.Client(c, &tls.Config{RootCAs: roots, ServerName: "example.com", NextProtos: []string{"http/1.1"}})
				if err := tc.Handshake(); err != nil {
					t.Fatal(err)
				}
				c = tc
			}
			c.SetDeadline(time.Now().Add(10 * time.Second))
			io.WriteString(c, "GET /ws HTTP/1.1\r\nHost: example.com\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n"+
				"Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n")
			br := bufio.NewReader(c)
			resp, err := http.ReadResponse(br, nil)
			if err != nil {
				t.Fatal(err)
			}
			if resp.StatusCode != http.StatusSwitchingProtocols {
				t.Fatalf("status %d, want 101", resp.StatusCode)
			}
			io.WriteString(c, "ping over the upgraded stream")
			got := make([]byte, len("ping over the upgraded stream"))
			if _, err := io.ReadFull(br, got); err != nil || string(got) != "ping over the upgraded stream" {
				t.Fatalf("echo %q, %v", got, err)
			}
			if r := <-seen; r.Header.Get("Upgrade") != "websocket" || r.Header.Get("Connection") != "upgrade" {
				t.Errorf("middleware saw Upgrade %q, Connection %q: want the upgrade it may refuse", r.Header.Get("Upgrade"), r.Header.Get("Connection"))
			}
			if got := o.last().Header.Get("Authorization"); got != secret {
				t.Errorf("origin saw Authorization %q: the middleware did not run before the upgrade", got)
			}
		})
	}
}

// TestUpstreamClosedWithTheFlow: when the guest connection ends while a
// request is still in flight upstream, the flow's upstream connection is
// closed anyway, not returned to a pool that outlives the flow.
func TestUpstreamClosedWithTheFlow(t *testing.T) {
	for _, h2 := range []bool{false, true} {
		t.Run(fmt.Sprint("upstream h2=", h2), func(t *testing.T) {
			var open atomic.Int32
			release := make(chan struct{})
			o := &origin{}
			o.Server = httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				select { // answers only after the guest has gone
				case <-release:
				case <-time.After(5 * time.Second):
				}
				io.WriteString(w, "late")
			}))
			o.Config.ErrorLog = log.New(io.Discard, "", 0)
			o.Config.ConnState = func(_ net.Conn, s http.ConnState) {
				switch s {
				case http.StateNew:
					open.Add(1)
				case http.StateClosed, http.StateHijacked:
					open.Add(-1)
				}
			}
			o.EnableHTTP2 = h2
			o.StartTLS()
			t.Cleanup(o.Close)
			h := newHarness(t, o.addr(), "example.com", nil, originRootsPEM(o))
			c := h.client("example.com", false)
			c.Timeout = 300 * time.Millisecond
			if _, err := c.Get("https://example.com/slow"); err == nil {
				t.Fatal("the slow request succeeded before its timeout")
			}
			c.CloseIdleConnections()
			close(release) // the handler finishes after the flow ended
			deadline := time.Now().Add(3 * time.Second)
			for open.Load() != 0 && time.Now().Before(deadline) {
				time.Sleep(10 * time.Millisecond)
			}
			if n := open.Load(); n != 0 {
				t.Fatalf("%d upstream connections still open after the guest left", n)
			}
		})
	}
}

func TestSlowMiddlewareDoesNotStallOthers(t *testing.T) {
	for _, h2 := range []bool{false, true} {
		t.Run(fmt.Sprint("h2=", h2), func(t *testing.T) {
			o := newOrigin(t, true, true, nil)
			release := make(chan struct{})
			entered := make(chan struct{})
			mw := httpproxy.MiddlewareFunc(func(ctx context.Context, r *httpproxy.Request) error {
				if r.URL.Path == "/slow" {
					close(entered)
					select {
					case <-release:
					case <-ctx.Done():
						return ctx.Err()
					}
				}
				return nil
			})
			h := newHarness(t, o.addr(), "example.com", mw, originRootsPEM(o))
			c := h.client("example.com", h2)
			slow := make(chan error, 1)
			go func() {
				resp, err := c.Get("https://example.com/slow")
				if err == nil {
					resp.Body.Close()
				}
				slow <- err
			}()
			<-entered
			// With h2 this runs on the same connection as /slow; with
			// http/1.1 the client opens a second one.
			resp, body := get(t, c, "https://example.com/fast")
			if resp.StatusCode != 200 || body != "hello GET /fast" {
				t.Fatalf("fast: %d %q", resp.StatusCode, body)
			}
			select {
			case err := <-slow:
				t.Fatalf("slow request finished early: %v", err)
			default:
			}
			close(release)
			if err := <-slow; err != nil {
				t.Fatal(err)
			}
			if want := map[bool]int32{true: 1, false: 2}[h2]; h.accept.Load() != want {
				t.Errorf("guest connections %d, want %d", h.accept.Load(), want)
			}
		})
	}
}

func TestServeConnEndsWithContext(t *testing.T) {
	o := newOrigin(t, false, false, nil)
	ca, err := httpproxy.NewCA(httpproxy.CAOptions{})
	if err != nil {
		t.Fatal(err)
	}
	p, err := httpproxy.New(httpproxy.Config{CA: ca, Dialer: &loopbackDialer{t: t}, NoSystemRoots: true})
	if err != nil {
		t.Fatal(err)
	}
	guest, host := net.Pipe()
	defer guest.Close()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- p.ServeConn(ctx, host, httpproxy.Flow{Src: netip.MustParseAddrPort("10.0.2.2:1"), Dst: o.addr()})
	}()
	guest.SetDeadline(time.Now().Add(10 * time.Second))
	io.WriteString(guest, "GET /idle HTTP/1.1\r\nHost: a.test\r\n\r\n")
	resp, err := http.ReadResponse(bufio.NewReader(guest), nil)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("status %d", resp.StatusCode)
	}
	// The connection is now idle in keep-alive; ending ctx ends it.
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("ServeConn: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("ServeConn did not return after ctx ended")
	}
}

// rawExchange sends one cleartext request as written and returns the
// response.
func rawExchange(t *testing.T, h *harness, request string) *http.Response {
	t.Helper()
	c, err := net.Dial("tcp", h.ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	c.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.WriteString(c, request); err != nil {
		t.Fatal(err)
	}
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatalf("%q: %v", request, err)
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp
}

// The guest cannot have the headers the middleware set removed by naming
// them in Connection: they reach the origin.
func TestConnectionCannotStripMiddlewareHeaders(t *testing.T) {
	o := newOrigin(t, false, false, nil)
	h := newHarness(t, o.addr(), "example.com", injector(nil), nil)
	for _, extra := range []string{
		"Connection: Authorization\r\n",
		"Connection: keep-alive, authorization\r\nAuthorization: guest's own\r\n",
		"Connection: Authorization\r\nConnection: close\r\n",
	} {
		resp := rawExchange(t, h, "GET /x HTTP/1.1\r\nHost: example.com\r\n"+extra+"\r\n")
		if resp.StatusCode != 200 {
			t.Fatalf("%q: status %d", extra, resp.StatusCode)
		}
		if got := o.last().Header.Get("Authorization"); got != secret {
			t.Errorf("%q: origin saw Authorization %q, want the middleware's", extra, got)
		}
	}
}

// TRACE would have the origin echo the request, injected credentials
// included, back to the guest: it is refused like CONNECT.
func TestTraceIs405(t *testing.T) {
	o := newOrigin(t, false, false, nil)
	h := newHarness(t, o.addr(), "example.com", injector(nil), nil)
	resp := rawExchange(t, h, "TRACE / HTTP/1.1\r\nHost: example.com\r\n\r\n")
	if resp.StatusCode != http.StatusMethodNotAllowed {
		t.Errorf("TRACE: status %d, want 405", resp.StatusCode)
	}
	if n := o.count(); n != 0 {
		t.Errorf("the origin got %d requests", n)
	}
}

// A middleware refuses an upgrade by throwing (403, nothing upstream) or
// turns it into a plain request by deleting its Upgrade header; either
// way no tunnel opens.
func TestMiddlewareRefusesUpgrades(t *testing.T) {
	const upgradeRequest = "GET /ws HTTP/1.1\r\nHost: example.com\r\nConnection: keep-alive, Upgrade\r\nUpgrade: websocket\r\n" +
		"Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n"
	o := newOrigin(t, false, false, nil)
	refuse := httpproxy.MiddlewareFunc(func(_ context.Context, r *httpproxy.Request) error {
		if r.Header.Get("Upgrade") != "" {
			return errors.New("no upgrades")
		}
		return nil
	})
	h := newHarness(t, o.addr(), "example.com", refuse, nil)
	if resp := rawExchange(t, h, upgradeRequest); resp.StatusCode != http.StatusForbidden {
		t.Errorf("refused upgrade: status %d, want 403", resp.StatusCode)
	}
	if n := o.count(); n != 0 {
		t.Errorf("the origin got %d requests for a refused upgrade", n)
	}

	for _, del := range []string{"Upgrade", "Connection"} {
		downgrade := httpproxy.MiddlewareFunc(func(_ context.Context, r *httpproxy.Request) error {
			r.Header.Del(del)
			return nil
		})
		h = newHarness(t, o.addr(), "example.com", downgrade, nil)
		if resp := rawExchange(t, h, upgradeRequest); resp.StatusCode != http.StatusUpgradeRequired {
			t.Errorf("%s deleted: status %d, want the origin's 426 to a plain request", del, resp.StatusCode)
		}
		if got := o.last().Header.Get("Upgrade"); got != "" {
			t.Errorf("%s deleted: the origin saw Upgrade %q", del, got)
		}
	}
}

// An h2c upgrade would have the guest speak HTTP/2 straight to the origin,
// in requests the middleware never sees: it is not forwarded, and the
// request is served as HTTP/1.1.
func TestH2CUpgradeIsNotForwarded(t *testing.T) {
	o := newOrigin(t, false, false, nil)
	seen := make(chan *httpproxy.Request, 1)
	h := newHarness(t, o.addr(), "example.com", injector(seen), nil)
	for _, upgrade := range []string{"h2c", "H2C", "h2c/1"} {
		resp := rawExchange(t, h, "GET /h2c HTTP/1.1\r\nHost: example.com\r\nConnection: Upgrade, HTTP2-Settings\r\n"+
			"Upgrade: "+upgrade+"\r\nHTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA\r\n\r\n")
		if resp.StatusCode != http.StatusOK {
			t.Errorf("Upgrade: %s: status %d, want 200 over HTTP/1.1", upgrade, resp.StatusCode)
		}
		last := o.last()
		if got := last.Header.Get("Upgrade") + last.Header.Get("Http2-Settings"); got != "" {
			t.Errorf("Upgrade: %s: the origin saw %q", upgrade, got)
		}
		if last.Header.Get("Authorization") != secret {
			t.Errorf("Upgrade: %s: the middleware's header did not reach the origin", upgrade)
		}
		if r := <-seen; r.Header.Get("Upgrade") != "" {
			t.Errorf("Upgrade: %s: the middleware saw Upgrade %q", upgrade, r.Header.Get("Upgrade"))
		}
	}
}
