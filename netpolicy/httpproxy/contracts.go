package httpproxy

import (
	"context"
	"net"
	"net/http"
	"net/netip"
	"net/url"
)

// Flow is one accepted guest TCP connection.
type Flow struct {
	// Src is the guest's endpoint; Dst is the destination the guest asked
	// for. Every upstream connection of the flow goes to Dst, whatever the
	// requests say.
	Src, Dst netip.AddrPort
	// Hostname is the name the sandbox resolver pinned to Dst.Addr(), or ""
	// if there is none. It is the only trusted name (see the package doc).
	Hostname string
	// Middleware sees every request of the flow; nil passes every request
	// unchanged. The policy picks it per flow.
	Middleware Middleware
}

// Protocol values of Request.Protocol.
const (
	ProtocolHTTP1 = "http/1.1"
	ProtocolH2    = "h2"
)

// Request is one guest request as the middleware sees it.
type Request struct {
	// Protocol is ProtocolHTTP1 (also for HTTP/1.0) or ProtocolH2: what
	// the guest spoke. The upstream protocol is negotiated separately.
	Protocol string
	// Method is the request method.
	Method string
	// URL is absolute: scheme "https" for a TLS flow, "http" otherwise;
	// host from the request's Host (or :authority); path and query as
	// sent. It is informational: changes to it are ignored.
	URL *url.URL
	// Header holds the request headers without hop-by-hop ones, except
	// an upgrade: "Upgrade" (the protocols, h2c left out) with
	// "Connection: upgrade" (see Upgrades in the package doc). The
	// middleware may change it; the result is what goes upstream. The
	// guest never sees it. A "Host" entry is ignored: the guest's Host is
	// forwarded as sent (see the authority rule in the package doc).
	Header http.Header
	// Destination says where the request goes.
	Destination Destination
	// TLS is nil for a cleartext flow.
	TLS *TLSInfo
}

// Destination is the endpoint pair of a request. Hostname is Flow.Hostname:
// only a DNS pin sets it, never the Host header or SNI.
type Destination struct {
	SourceIP     netip.Addr
	SourcePort   uint16
	OriginalIP   netip.Addr
	OriginalPort uint16
	Hostname     string
}

// TLSInfo describes the guest's TLS session.
type TLSInfo struct {
	// SNI is the server name the guest sent, or "".
	SNI string
	// ALPN is the negotiated protocol ("h2", "http/1.1"), or "".
	ALPN string
}

// Middleware decides and edits requests before they go upstream.
//
// Handle is called once per request, before any of it is sent upstream,
// from many goroutines at once (one per request; HTTP/2 streams of one
// connection run concurrently). ctx ends when the guest abandons the
// request or the proxy stops. A non-nil error refuses the request: the
// guest gets 403 "network policy denied" and nothing reaches upstream.
// Handle may modify r.Header and must not keep r after returning.
type Middleware interface {
	Handle(ctx context.Context, r *Request) error
}

// MiddlewareFunc adapts a function to Middleware.
type MiddlewareFunc func(ctx context.Context, r *Request) error

// Handle implements Middleware.
func (f MiddlewareFunc) Handle(ctx context.Context, r *Request) error { return f(ctx, r) }

// Dialer opens upstream TCP connections. network is "tcp"; address is
// "ip:port" with a literal IP (always the flow's Dst). *net.Dialer and
// netpolicy.Dialer implementations satisfy it.
type Dialer interface {
	DialContext(ctx context.Context, network, address string) (net.Conn, error)
}

var _ Dialer = (*net.Dialer)(nil)
