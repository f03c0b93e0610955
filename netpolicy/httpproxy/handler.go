package httpproxy

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/httputil"
	"net/netip"
	"net/textproto"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"time"
)

// Response bodies of the errors the proxy generates. They never include
// anything from the request.
const (
	msgDenied        = "network policy denied\n"
	msgMisdirected   = "misdirected request: host does not match the connection's destination\n"
	msgConnect       = "CONNECT is not served by a transparent proxy\n"
	msgTrace         = "TRACE is not served: the origin would echo the headers the middleware added\n"
	msgUntrusted     = "bad gateway: upstream certificate not trusted\n"
	msgUnreachable   = "bad gateway: upstream unreachable\n"
	msgUpstreamError = "bad gateway: upstream failed\n"
)

// flowConn serves the requests of one guest connection.
type flowConn struct {
	p    *Proxy
	flow Flow
	tls  *TLSInfo
	// authority is the one host name requests of this connection may
	// name (normalized), or "" if any is allowed (cleartext, no pin).
	authority string
	// misdirected is set when the SNI disagrees with the pinned name:
	// every request is refused with 421.
	misdirected bool
	scheme      string
	// urlHost is the authority of Request.URL: the SNI, else the DNS pin,
	// else the original IP, with the original port unless it is the
	// scheme's default. Never the guest's Host header, which the guest
	// can set to anything (0.6.0's rule, kept so middleware that trusts
	// url.hostname behaves the same).
	urlHost   string
	transport *http.Transport
	rp        *httputil.ReverseProxy

	// upstream are the flow's open upstream connections; ended is set
	// once the guest connection is over, after which none may open.
	upMu     sync.Mutex
	upstream map[net.Conn]struct{}
	ended    bool
}

// errFlowEnded refuses an upstream dial after the guest connection ended.
var errFlowEnded = errors.New("httpproxy: the guest connection has ended")

// track records an upstream connection of the flow, or closes it if the
// flow has ended meanwhile.
func (fc *flowConn) track(c net.Conn) (net.Conn, error) {
	fc.upMu.Lock()
	defer fc.upMu.Unlock()
	if fc.ended {
		c.Close()
		return nil, errFlowEnded
	}
	fc.upstream[c] = struct{}{}
	return &upstreamConn{Conn: c, fc: fc}, nil
}

// closeUpstream ends the flow's upstream side: every connection it opened
// is closed, in use or idle. Closing idle connections alone would miss
// one still busy with a request whose guest is gone (an HTTP/2 stream, a
// handler finishing after the server returned), which would then wait in
// the pool for its idle timeout, holding the origin's resources.
func (fc *flowConn) closeUpstream() {
	fc.upMu.Lock()
	fc.ended = true
	conns := fc.upstream
	fc.upstream = nil
	fc.upMu.Unlock()
	for c := range conns {
		c.Close()
	}
	fc.transport.CloseIdleConnections()
}

// upstreamConn forgets itself in its flow when closed.
type upstreamConn struct {
	net.Conn
	fc *flowConn
}

func (c *upstreamConn) Close() error {
	c.fc.upMu.Lock()
	delete(c.fc.upstream, c.Conn)
	c.fc.upMu.Unlock()
	return c.Conn.Close()
}

func newFlowConn(p *Proxy, flow Flow, ti *TLSInfo) *flowConn {
	fc := &flowConn{p: p, flow: flow, tls: ti, scheme: "http", upstream: map[net.Conn]struct{}{}}
	pinned := normalizeHost(flow.Hostname)
	sni := ""
	if ti != nil {
		fc.scheme = "https"
		sni = normalizeHost(ti.SNI)
	}
	switch {
	case pinned != "":
		fc.authority = pinned
		fc.misdirected = sni != "" && sni != pinned
	case sni != "":
		fc.authority = sni
	}
	verifyName := fc.authority
	if verifyName == "" {
		verifyName = flow.Dst.Addr().Unmap().String()
	}
	fc.urlHost = urlAuthority(fc.scheme, verifyName, flow.Dst.Port())
	dst := flow.Dst.String()
	fc.transport = &http.Transport{
		Proxy: nil, // never an environment proxy: upstream is always Dst
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			ctx, cancel := context.WithTimeout(ctx, p.cfg.DialTimeout)
			defer cancel()
			c, err := p.cfg.Dialer.DialContext(ctx, "tcp", dst)
			if err != nil {
				return nil, &dialError{err}
			}
			return fc.track(c)
		},
		TLSClientConfig: &tls.Config{
			ServerName: verifyName,
			RootCAs:    p.roots,
			MinVersion: tls.VersionTLS12,
		},
		ForceAttemptHTTP2:     true,
		DisableCompression:    true,
		MaxIdleConnsPerHost:   4,
		IdleConnTimeout:       90 * time.Second,
		TLSHandshakeTimeout:   p.cfg.DialTimeout,
		ExpectContinueTimeout: time.Second,
	}
	fc.rp = &httputil.ReverseProxy{
		Director: func(out *http.Request) {
			out.URL.Scheme = fc.scheme
			out.URL.Host = dst
			if _, ok := out.Header["X-Forwarded-For"]; !ok {
				out.Header["X-Forwarded-For"] = nil // do not add one
			}
		},
		Transport:     fc.transport,
		FlushInterval: -1, // stream: flush after every write
		ErrorLog:      p.cfg.ErrorLog,
		ErrorHandler:  fc.upstreamError,
	}
	return fc
}

type dialError struct{ err error }

func (e *dialError) Error() string { return "cannot dial upstream: " + e.err.Error() }
func (e *dialError) Unwrap() error { return e.err }

func (fc *flowConn) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if fc.misdirected {
		plainError(w, http.StatusMisdirectedRequest, msgMisdirected)
		return
	}
	switch r.Method {
	case http.MethodConnect:
		plainError(w, http.StatusMethodNotAllowed, msgConnect)
		return
	case http.MethodTrace:
		plainError(w, http.StatusMethodNotAllowed, msgTrace)
		return
	}
	host := r.Host
	if host == "" {
		host = fc.authority
		if host == "" {
			host = fc.flow.Dst.Addr().Unmap().String()
		}
		r.Host = host
	}
	if !fc.hostAllowed(host) {
		plainError(w, http.StatusMisdirectedRequest, msgMisdirected)
		return
	}

	hop := hopHeaders(r.Header)
	upgrade := upgradeProtocols(r.Header)
	req := &Request{
		Protocol: ProtocolHTTP1,
		Method:   r.Method,
		URL: &url.URL{
			Scheme:   fc.scheme,
			Host:     fc.urlHost,
			Path:     r.URL.Path,
			RawPath:  r.URL.RawPath,
			RawQuery: r.URL.RawQuery,
		},
		Header: r.Header.Clone(),
		Destination: Destination{
			SourceIP:     fc.flow.Src.Addr(),
			SourcePort:   fc.flow.Src.Port(),
			OriginalIP:   fc.flow.Dst.Addr(),
			OriginalPort: fc.flow.Dst.Port(),
			Hostname:     fc.flow.Hostname,
		},
	}
	if req.Header == nil {
		req.Header = http.Header{}
	}
	if r.ProtoMajor == 2 {
		req.Protocol = ProtocolH2
	}
	if fc.tls != nil {
		ti := *fc.tls
		req.TLS = &ti
	}
	for _, h := range hop {
		req.Header.Del(h)
	}
	if upgrade != "" {
		// The middleware sees an upgrade as the guest asked for it (as
		// 0.6.0's did), so that it can refuse it (throw) or downgrade the
		// request to a plain one (delete either header).
		req.Header.Set("Upgrade", upgrade)
		req.Header.Set("Connection", "upgrade")
	}
	if mw := fc.flow.Middleware; mw != nil {
		if err := mw.Handle(r.Context(), req); err != nil {
			plainError(w, http.StatusForbidden, msgDenied)
			return
		}
	}
	// The middleware's headers go upstream. Of the guest's hop-by-hop
	// headers, ReverseProxy needs back only what it forwards itself: an
	// upgrade the middleware kept and "TE: trailers". The guest's
	// Connection header is not put back as it was: ReverseProxy would
	// strip every header it names, and the guest would name the ones the
	// middleware set (Connection: Authorization).
	out := req.Header
	if out == nil {
		out = http.Header{}
	}
	kept := ""
	if upgrade != "" && connectionHas(out, "upgrade") {
		kept = upgradeProtocols(http.Header{"Connection": {"upgrade"}, "Upgrade": out.Values("Upgrade")})
	}
	out.Del("Connection")
	out.Del("Upgrade")
	if kept != "" {
		out.Set("Connection", "Upgrade")
		out.Set("Upgrade", kept)
	}
	if _, ok := out["Te"]; !ok {
		if v := r.Header.Values("Te"); len(v) > 0 {
			out["Te"] = v
		}
	}
	r.Header = out
	fc.rp.ServeHTTP(w, r)
}

// hostAllowed applies the authority rule (see the package doc) to a Host
// header or :authority.
func (fc *flowConn) hostAllowed(host string) bool {
	if fc.authority == "" {
		return true
	}
	name := host
	if h, _, err := net.SplitHostPort(host); err == nil {
		name = h
	}
	name = normalizeHost(strings.TrimSuffix(strings.TrimPrefix(name, "["), "]"))
	if name == fc.authority {
		return true
	}
	ip, err := netip.ParseAddr(name)
	return err == nil && ip.Unmap() == fc.flow.Dst.Addr().Unmap()
}

// urlAuthority is host:port as a URL writes it: an IPv6 address in
// brackets, and no port when it is the scheme's default (as WHATWG URL
// parsing in the middleware would normalise it anyway).
func urlAuthority(scheme, host string, port uint16) string {
	if (scheme == "http" && port == 80) || (scheme == "https" && port == 443) {
		if strings.Contains(host, ":") {
			return "[" + host + "]"
		}
		return host
	}
	return net.JoinHostPort(host, strconv.Itoa(int(port)))
}

// connectionHas reports whether h's Connection header names token.
func connectionHas(h http.Header, token string) bool {
	for _, v := range h.Values("Connection") {
		for _, n := range strings.Split(v, ",") {
			if strings.EqualFold(strings.TrimSpace(n), token) {
				return true
			}
		}
	}
	return false
}

// upgradeProtocols returns the protocols an upgrade request in h asks for
// (its Upgrade header, when Connection names "upgrade"), comma-separated,
// without h2c: after an h2c upgrade the guest would speak HTTP/2 straight
// to the origin, in requests the middleware never sees, so it is dropped
// and the request goes on as HTTP/1.1, as to a server without h2c (RFC
// 9113 deprecates that upgrade). "" when nothing is left to upgrade to.
func upgradeProtocols(h http.Header) string {
	if !connectionHas(h, "upgrade") {
		return ""
	}
	var protocols []string
	for _, v := range h.Values("Upgrade") {
		for _, p := range strings.Split(v, ",") {
			p = strings.TrimSpace(p)
			name, _, _ := strings.Cut(p, "/")
			if p != "" && !strings.EqualFold(name, "h2c") {
				protocols = append(protocols, p)
			}
		}
	}
	return strings.Join(protocols, ", ")
}

// hopHeaders returns the canonical names of the hop-by-hop headers
// present in h: the RFC 9110 list and those named by Connection.
func hopHeaders(h http.Header) []string {
	var names []string
	add := func(n string) {
		n = textproto.CanonicalMIMEHeaderKey(strings.TrimSpace(n))
		if _, ok := h[n]; !ok {
			return
		}
		for _, m := range names {
			if m == n {
				return
			}
		}
		names = append(names, n)
	}
	for _, v := range h.Values("Connection") {
		for _, n := range strings.Split(v, ",") {
			add(n)
		}
	}
	// HTTP2-Settings belongs to an h2c upgrade, which is never forwarded.
	for _, n := range []string{"Connection", "Proxy-Connection", "Keep-Alive", "Proxy-Authenticate", "Proxy-Authorization", "Te", "Trailer", "Transfer-Encoding", "Upgrade", "Http2-Settings"} {
		add(n)
	}
	return names
}

func (fc *flowConn) upstreamError(w http.ResponseWriter, r *http.Request, err error) {
	var (
		verr *tls.CertificateVerificationError
		uerr x509.UnknownAuthorityError
		herr x509.HostnameError
		cerr x509.CertificateInvalidError
		derr *dialError
	)
	switch {
	case r.Context().Err() != nil:
		// The guest went away; nobody to answer.
		return
	case errors.As(err, &verr), errors.As(err, &uerr), errors.As(err, &herr), errors.As(err, &cerr):
		plainError(w, http.StatusBadGateway, msgUntrusted)
	case errors.As(err, &derr):
		plainError(w, http.StatusBadGateway, msgUnreachable)
	default:
		plainError(w, http.StatusBadGateway, msgUpstreamError)
	}
	fc.p.cfg.ErrorLog.Printf("httpproxy: %s -> %s: %v", fc.flow.Src, fc.flow.Dst, err)
}

func plainError(w http.ResponseWriter, code int, msg string) {
	h := w.Header()
	h.Set("Content-Type", "text/plain; charset=utf-8")
	h.Set("Content-Length", fmt.Sprint(len(msg)))
	h.Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(code)
	w.Write([]byte(msg))
}
