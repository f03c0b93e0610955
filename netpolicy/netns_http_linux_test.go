package netpolicy_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/http"
	"net/http/cgi"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/torkbot/sandbox/internal/testutil"
	"github.com/torkbot/sandbox/netpolicy"
	"github.com/torkbot/sandbox/netpolicy/httpproxy"
)

// httpTools are the binaries TestNetnsHTTP needs beyond tools.
var httpTools = map[string]string{"git": "git", "python3": "python3"}

// The intercepted origins, on originA and on originBare, an address no DNS
// answer names (requests to it never have a pinned hostname).
const (
	httpPort      = 8080 // cleartext HTTP/1.1
	httpsPort     = 4443 // HTTPS (h2 and http/1.1), certificate from the trusted test CA
	untrustedPort = 4444 // HTTPS whose CA is not trusted upstream
	apiName       = "api.example.test"
	untrustedName = "untrusted.example.test"
	gitToken      = "s3cret-token-never-in-the-guest"
)

var originBare = netip.MustParseAddr("198.51.100.11")

// seenRequest is what an origin received.
type seenRequest struct {
	proto, host, path, authorization string
}

type httpOrigins struct {
	dir string

	mu   sync.Mutex
	seen []seenRequest
	// untrustedRequests counts requests that reached the untrusted origin;
	// connections counts TCP connections the cleartext origin accepted.
	untrustedRequests atomic.Int64
	connections       atomic.Int64
}

func (o *httpOrigins) record(r *http.Request) {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.seen = append(o.seen, seenRequest{r.Proto, r.Host, r.URL.Path, r.Header.Get("Authorization")})
}

// last returns the last request an origin saw with this path, or false.
func (o *httpOrigins) last(path string) (seenRequest, bool) {
	o.mu.Lock()
	defer o.mu.Unlock()
	for i := len(o.seen) - 1; i >= 0; i-- {
		if o.seen[i].path == path {
			return o.seen[i], true
		}
	}
	return seenRequest{}, false
}

// testCA is a CA for origin certificates.
type testCA struct {
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
	pem  []byte
}

func newTestCA(t *testing.T, name string) *testCA {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: name},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, _ := x509.ParseCertificate(der)
	return &testCA{cert: cert, key: key, pem: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})}
}

// leaf issues a server certificate for dnsName.
func (ca *testCA) leaf(t *testing.T, dnsName string) tls.Certificate {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	der, err := x509.CreateCertificate(rand.Reader, &x509.Certificate{
		SerialNumber: big.NewInt(time.Now().UnixNano()), Subject: pkix.Name{CommonName: dnsName}, DNSNames: []string{dnsName},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}, ca.cert, &key.PublicKey, ca.key)
	if err != nil {
		t.Fatal(err)
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}
}

func (o *httpOrigins) start(t *testing.T, h *harness) {
	trusted, untrusted := newTestCA(t, "origin test CA"), newTestCA(t, "untrusted test CA")
	h.upstreamRoots = append(h.upstreamRoots, trusted.pem...)

	// A bare git repository, served by git http-backend (smart HTTP) to
	// requests that carry the token.
	repo := filepath.Join(o.dir, "repo.git")
	work := filepath.Join(o.dir, "work")
	for _, c := range [][]string{
		{"git", "init", "-q", "-b", "main", work},
		{"git", "-C", work, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-q", "--allow-empty", "-m", "first"},
		{"git", "clone", "-q", "--bare", work, repo},
	} {
		testutil.Run(t, c[0], c[1:]...)
	}
	if err := os.WriteFile(filepath.Join(work, "README"), []byte("cloned through the sandbox\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	testutil.Run(t, "git", "-C", work, "add", "README")
	testutil.Run(t, "git", "-C", work, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-q", "-m", "readme")
	testutil.Run(t, "git", "-C", work, "push", "-q", repo, "main")
	gitBin, err := exec.LookPath("git")
	if err != nil {
		t.Fatal(err)
	}
	git := &cgi.Handler{Path: gitBin, Args: []string{"http-backend"}, Env: []string{"GIT_PROJECT_ROOT=" + o.dir, "GIT_HTTP_EXPORT_ALL=1"}}

	mux := http.NewServeMux()
	mux.HandleFunc("/git/", func(w http.ResponseWriter, r *http.Request) {
		o.record(r)
		if r.Header.Get("Authorization") != "Bearer "+gitToken {
			w.Header().Set("WWW-Authenticate", `Bearer realm="git"`)
			http.Error(w, "token required", http.StatusUnauthorized)
			return
		}
		r.URL.Path = strings.TrimPrefix(r.URL.Path, "/git")
		git.ServeHTTP(w, r)
	})
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		o.record(r)
		io.Copy(io.Discard, r.Body)
		fmt.Fprintf(w, "hello over %s", r.Proto)
	})

	serve := func(addr netip.AddrPort, cert *tls.Certificate, handler http.Handler) {
		l := listenOrigin(t, "tcp", addr)
		srv := &http.Server{Handler: handler, ConnState: func(_ net.Conn, s http.ConnState) {
			if s == http.StateNew && cert == nil {
				o.connections.Add(1)
			}
		}}
		if cert != nil {
			srv.TLSConfig = &tls.Config{Certificates: []tls.Certificate{*cert}}
			go srv.ServeTLS(l, "", "")
		} else {
			go srv.Serve(l)
		}
		t.Cleanup(func() { srv.Close() })
	}
	apiCert := trusted.leaf(t, apiName)
	untrustedCert := untrusted.leaf(t, untrustedName)
	serve(netip.AddrPortFrom(originA, httpPort), nil, mux)
	serve(netip.AddrPortFrom(originBare, httpPort), nil, mux)
	serve(netip.AddrPortFrom(originA, httpsPort), &apiCert, mux)
	serve(netip.AddrPortFrom(originA, untrustedPort), &untrustedCert, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		o.untrustedRequests.Add(1)
	}))
}

// credentials is the test's middleware: it injects the token into requests
// whose destination the sandbox's DNS pinned to apiName, records what it
// saw, and refuses paths under /deny.
type credentials struct {
	mu   sync.Mutex
	seen []httpproxy.Request
}

func (c *credentials) Handle(_ context.Context, r *httpproxy.Request) error {
	c.mu.Lock()
	c.seen = append(c.seen, *r)
	c.mu.Unlock()
	if strings.HasPrefix(r.URL.Path, "/deny") {
		return errors.New("denied by the test middleware")
	}
	if r.Destination.Hostname == apiName {
		r.Header.Set("Authorization", "Bearer "+gitToken)
	}
	return nil
}

func (c *credentials) last() httpproxy.Request {
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.seen) == 0 {
		return httpproxy.Request{}
	}
	return c.seen[len(c.seen)-1]
}

// TestNetnsHTTP runs real HTTP clients (curl, git, python) in the guest
// namespace through HTTP interception: TLS terminated with the per-boot CA,
// credentials injected by the middleware on the way out.
func TestNetnsHTTP(t *testing.T) {
	if os.Getenv(envInNetns) == "" {
		reexecInNetns(t, httpTools, clientTools)
		return
	}
	o := &httpOrigins{dir: t.TempDir()}
	h := newHarness(t, o.start)
	mw := &credentials{}
	decide := func(f netpolicy.Flow) *netpolicy.Decision {
		switch f.Dst.Port() {
		case httpPort, httpsPort, untrustedPort:
			return &netpolicy.Decision{Action: netpolicy.AcceptHTTP, Middleware: mw}
		}
		return nil
	}
	h.policy.http.Store(&decide)
	ca := h.interceptCAFile
	curl := func(args ...string) (string, error) {
		return h.guestErr(append([]string{"curl", "-sS", "-v", "--max-time", "10", "--cacert", ca}, args...)...)
	}

	t.Run("curl https injects a credential the guest never sees", func(t *testing.T) {
		out, err := curl("--http1.1", "https://"+apiName+":4443/hello")
		if err != nil || !strings.Contains(out, "hello over HTTP/") {
			t.Fatalf("curl: %v\n%s", err, out)
		}
		seen, ok := o.last("/hello")
		if !ok || seen.authorization != "Bearer "+gitToken {
			t.Fatalf("origin saw %+v, want the injected credential", seen)
		}
		if strings.Contains(out, gitToken) {
			t.Fatalf("the guest's verbose output shows the credential:\n%s", out)
		}
		req := mw.last()
		if req.Protocol != httpproxy.ProtocolHTTP1 || req.TLS == nil || req.TLS.SNI != apiName || req.Destination.Hostname != apiName {
			t.Fatalf("middleware saw %+v", req)
		}
	})
	t.Run("curl plain http injects too", func(t *testing.T) {
		out, err := curl("http://" + apiName + ":8080/plain")
		if err != nil || strings.Contains(out, gitToken) {
			t.Fatalf("curl: %v\n%s", err, out)
		}
		if seen, _ := o.last("/plain"); seen.authorization != "Bearer "+gitToken {
			t.Fatalf("origin saw %+v", seen)
		}
	})
	t.Run("curl --http2 is h2 to the middleware", func(t *testing.T) {
		out, err := curl("--http2", "https://"+apiName+":4443/h2")
		if err != nil || !strings.Contains(out, "using HTTP/2") {
			t.Fatalf("curl: %v\n%s", err, out)
		}
		if req := mw.last(); req.Protocol != httpproxy.ProtocolH2 || req.TLS.ALPN != "h2" {
			t.Fatalf("middleware saw protocol %q, ALPN %+v", req.Protocol, req.TLS)
		}
		if seen, _ := o.last("/h2"); seen.authorization == "" {
			t.Fatalf("origin saw %+v", seen)
		}
	})
	t.Run("git clone over https with an injected token", func(t *testing.T) {
		dst := filepath.Join(t.TempDir(), "clone")
		out, err := h.guestErr("env", "GIT_SSL_CAINFO="+ca, "GIT_TERMINAL_PROMPT=0", "git", "clone", "-q", "https://"+apiName+":4443/git/repo.git", dst)
		if err != nil {
			t.Fatalf("git clone: %v\n%s", err, out)
		}
		if b, err := os.ReadFile(filepath.Join(dst, "README")); err != nil || string(b) != "cloned through the sandbox\n" {
			t.Fatalf("README = %q, %v", b, err)
		}
		if strings.Contains(out, gitToken) {
			t.Fatalf("git output shows the token:\n%s", out)
		}
	})
	t.Run("python urllib", func(t *testing.T) {
		script := fmt.Sprintf(`import ssl, urllib.request
ctx = ssl.create_default_context(cafile=%q)
print(urllib.request.urlopen("https://%s:4443/python", context=ctx, timeout=10).read().decode())`, ca, apiName)
		out, err := h.guestErr("python3", "-c", script)
		if err != nil || !strings.HasPrefix(out, "hello over HTTP/") {
			t.Fatalf("python: %v\n%s", err, out)
		}
		if seen, _ := o.last("/python"); seen.authorization != "Bearer "+gitToken {
			t.Fatalf("origin saw %+v", seen)
		}
	})
	t.Run("spoofed host to an unpinned address gets no credential", func(t *testing.T) {
		out, err := curl("-H", "Host: "+apiName, fmt.Sprintf("http://%s:8080/spoofed", originBare))
		if err != nil {
			t.Fatalf("curl: %v\n%s", err, out)
		}
		// The URL names the original IP, never the Host header (0.6.0's rule).
		if req := mw.last(); req.Destination.Hostname != "" || req.URL.Host != fmt.Sprintf("%s:8080", originBare) {
			t.Fatalf("middleware saw hostname %q for URL %s", req.Destination.Hostname, req.URL)
		}
		if seen, ok := o.last("/spoofed"); !ok || seen.authorization != "" {
			t.Fatalf("origin saw %+v, want no credential", seen)
		}
	})
	t.Run("host disagreeing with the pin is refused", func(t *testing.T) {
		out, _ := curl("-H", "Host: other.example.test", "https://"+apiName+":4443/misdirected")
		if !strings.Contains(out, "< HTTP/2 421") && !strings.Contains(out, "< HTTP/1.1 421") {
			t.Fatalf("want 421:\n%s", out)
		}
		if _, ok := o.last("/misdirected"); ok {
			t.Fatal("the origin got the misdirected request")
		}
	})
	t.Run("untrusted upstream fails and gets no request", func(t *testing.T) {
		out, _ := curl("https://" + untrustedName + ":4444/")
		if !strings.Contains(out, " 502") {
			t.Fatalf("want 502:\n%s", out)
		}
		if n := o.untrustedRequests.Load(); n != 0 {
			t.Fatalf("the untrusted origin got %d requests", n)
		}
	})
	t.Run("middleware throw is 403", func(t *testing.T) {
		out, _ := curl("https://" + apiName + ":4443/deny")
		if !strings.Contains(out, " 403") || !strings.Contains(out, "network policy denied") {
			t.Fatalf("want 403:\n%s", out)
		}
		if _, ok := o.last("/deny"); ok {
			t.Fatal("the origin got the denied request")
		}
	})
	t.Run("non-HTTP bytes are closed unanswered", func(t *testing.T) {
		before := o.connections.Load()
		out, _ := h.guestRun("SSH-2.0-client\r\n", "nc", "-w", "5", apiName, "8080")
		if out != "" {
			t.Fatalf("got a reply: %q", out)
		}
		if o.connections.Load() != before {
			t.Fatal("the origin got a connection")
		}
	})

	h.closeNoLeaks(t)
}
