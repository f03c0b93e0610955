package httpproxy

import (
	"bufio"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"net/netip"
	"sync"
	"time"
)

// Errors returned by ServeConn for flows that are closed without serving.
var (
	// ErrNotHTTP: the guest's first bytes are neither a TLS ClientHello
	// record nor an HTTP/1.x request line.
	ErrNotHTTP = errors.New("httpproxy: not HTTP")
	// ErrHandshake: the guest's TLS handshake failed.
	ErrHandshake = errors.New("httpproxy: guest TLS handshake failed")
)

// Config configures a Proxy.
type Config struct {
	// CA mints the certificates presented to the guest. Required.
	CA *CA
	// Dialer opens upstream connections; nil means a *net.Dialer.
	Dialer Dialer
	// ExtraRootsPEM are PEM certificates trusted for upstream TLS in
	// addition to the system roots (the content of NODE_EXTRA_CA_CERTS).
	ExtraRootsPEM []byte
	// NoSystemRoots leaves the system roots out (tests).
	NoSystemRoots bool
	// DialTimeout bounds each upstream dial; 0 means 10s.
	DialTimeout time.Duration
	// SniffTimeout bounds the wait for the guest's first bytes and its
	// TLS handshake; 0 means 30s.
	SniffTimeout time.Duration
	// IdleTimeout closes a guest connection idle between requests; 0 means
	// 5 minutes.
	IdleTimeout time.Duration
	// ErrorLog receives diagnostics; nil discards them.
	ErrorLog *log.Logger
}

// Proxy intercepts HTTP(S) flows. Create it with New; it starts nothing.
// ServeConn may be called from many goroutines at once.
type Proxy struct {
	cfg   Config
	roots *x509.CertPool
}

// New validates cfg and returns a Proxy.
func New(cfg Config) (*Proxy, error) {
	if cfg.CA == nil {
		return nil, errors.New("httpproxy: Config.CA is required")
	}
	if cfg.Dialer == nil {
		cfg.Dialer = &net.Dialer{}
	}
	if cfg.DialTimeout <= 0 {
		cfg.DialTimeout = 10 * time.Second
	}
	if cfg.SniffTimeout <= 0 {
		cfg.SniffTimeout = 30 * time.Second
	}
	if cfg.IdleTimeout <= 0 {
		cfg.IdleTimeout = 5 * time.Minute
	}
	if cfg.ErrorLog == nil {
		cfg.ErrorLog = log.New(io.Discard, "", 0)
	}
	roots := x509.NewCertPool()
	if !cfg.NoSystemRoots {
		sys, err := x509.SystemCertPool()
		if err != nil {
			return nil, fmt.Errorf("httpproxy: cannot load system roots: %w", err)
		}
		roots = sys
	}
	if len(cfg.ExtraRootsPEM) > 0 && !roots.AppendCertsFromPEM(cfg.ExtraRootsPEM) {
		return nil, errors.New("httpproxy: Config.ExtraRootsPEM holds no certificate")
	}
	return &Proxy{cfg: cfg, roots: roots}, nil
}

// ServeConn serves one accepted guest connection until the guest closes
// it, it idles out, or ctx ends. It owns guest and closes it before
// returning. It returns nil after a served connection ends, ErrNotHTTP or
// ErrHandshake (wrapped) when the connection was closed without serving.
func (p *Proxy) ServeConn(ctx context.Context, guest net.Conn, flow Flow) error {
	defer guest.Close()
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stop := context.AfterFunc(ctx, func() { guest.Close() })
	defer stop()

	guest.SetReadDeadline(time.Now().Add(p.cfg.SniffTimeout))
	br := bufio.NewReader(guest)
	kind, err := sniff(br)
	if err != nil {
		return fmt.Errorf("%w: %w", ErrNotHTTP, err)
	}
	// done closes when the connection is closed by whoever ends up
	// owning it (the HTTP server, a hijacking handler, or the TLS layer).
	done := make(chan struct{})
	var once sync.Once
	conn := net.Conn(&closeNotifyConn{
		Conn:    &bufferedConn{Conn: guest, r: br},
		onClose: func() { once.Do(func() { close(done) }) },
	})
	var tlsInfo *TLSInfo
	switch kind {
	case kindTLS:
		tc := tls.Server(conn, p.guestTLSConfig(flow))
		if err := tc.HandshakeContext(ctx); err != nil {
			return fmt.Errorf("%w: %w", ErrHandshake, err)
		}
		st := tc.ConnectionState()
		tlsInfo = &TLSInfo{SNI: st.ServerName, ALPN: st.NegotiatedProtocol}
		conn = tc
	case kindHTTP1:
	default:
		return ErrNotHTTP
	}
	guest.SetReadDeadline(time.Time{})

	fc := newFlowConn(p, flow, tlsInfo)
	defer fc.closeUpstream()
	srv := &http.Server{
		Handler:           fc,
		ReadHeaderTimeout: p.cfg.SniffTimeout,
		IdleTimeout:       p.cfg.IdleTimeout,
		ErrorLog:          p.cfg.ErrorLog,
		BaseContext:       func(net.Listener) context.Context { return ctx },
	}
	if tlsInfo != nil && tlsInfo.ALPN != "h2" {
		// Keep a TLS guest that negotiated http/1.1 (or nothing) off
		// the HTTP/2 path; h2 is used only when ALPN chose it.
		srv.TLSNextProto = map[string]func(*http.Server, *tls.Conn, http.Handler){}
	}
	ln := &oneConnListener{conn: conn, addr: conn.LocalAddr(), done: done}
	err = srv.Serve(ln)
	if errors.Is(err, errListenerDone) || errors.Is(err, http.ErrServerClosed) {
		err = nil
	}
	return err
}

func (p *Proxy) guestTLSConfig(flow Flow) *tls.Config {
	return &tls.Config{
		MinVersion: tls.VersionTLS12,
		NextProtos: []string{"h2", "http/1.1"},
		GetCertificate: func(hello *tls.ClientHelloInfo) (*tls.Certificate, error) {
			if hello.ServerName != "" {
				return p.cfg.CA.Leaf([]string{hello.ServerName}, nil)
			}
			// No SNI: the guest connected by address. Cover the address
			// and the pinned name, if any.
			var names []string
			if flow.Hostname != "" {
				names = []string{flow.Hostname}
			}
			return p.cfg.CA.Leaf(names, []netip.Addr{flow.Dst.Addr()})
		},
	}
}

// bufferedConn reads through the sniffing reader first.
type bufferedConn struct {
	net.Conn
	r *bufio.Reader
}

func (c *bufferedConn) Read(b []byte) (int, error) { return c.r.Read(b) }

var errListenerDone = errors.New("httpproxy: connection done")

// oneConnListener hands out one connection, then blocks until done is
// closed (the connection was closed) and reports errListenerDone, which
// ends http.Server.Serve. The connection is handed out unwrapped so that
// net/http sees a *tls.Conn and can take the HTTP/2 path.
type oneConnListener struct {
	mu   sync.Mutex
	conn net.Conn // nil once handed out
	addr net.Addr
	done <-chan struct{}
}

func (l *oneConnListener) Accept() (net.Conn, error) {
	l.mu.Lock()
	c := l.conn
	l.conn = nil
	l.mu.Unlock()
	if c != nil {
		return c, nil
	}
	<-l.done
	return nil, errListenerDone
}

// Close closes a connection not yet handed out; a served one is closed by
// the server.
func (l *oneConnListener) Close() error {
	l.mu.Lock()
	c := l.conn
	l.conn = nil
	l.mu.Unlock()
	if c != nil {
		c.Close()
	}
	return nil
}

func (l *oneConnListener) Addr() net.Addr { return l.addr }

// closeNotifyConn calls onClose after every Close (onClose must be
// idempotent).
type closeNotifyConn struct {
	net.Conn
	onClose func()
}

func (c *closeNotifyConn) Close() error {
	err := c.Conn.Close()
	c.onClose()
	return err
}
