// Package httpproxy intercepts the HTTP(S) flows a network policy accepted
// with AcceptHTTP: it terminates the guest's connection on the host, shows
// each request to a Middleware (which may refuse it or add headers such as
// credentials), and forwards it to the flow's original destination.
//
// # Flows
//
// Proxy.ServeConn serves one accepted guest TCP connection. It sniffs the
// first bytes: a TLS handshake record is terminated with a leaf certificate
// the per-boot CA mints for the SNI (ALPN offers h2 and http/1.1); an
// HTTP/1.x request line is served as cleartext HTTP/1.1 on any port;
// anything else (including the HTTP/2 cleartext preface) closes the
// connection without a byte written: fail closed. Requests are served by
// net/http on that one connection: keep-alive, chunked and streaming
// bodies, HEAD/204/304, Expect: 100-continue, trailers, and HTTP/2 streams
// served concurrently. Each request becomes a Request for the Middleware;
// its header changes go upstream only, and the responses the proxy itself
// generates never include request data.
//
// # Upstream
//
// Every upstream connection goes to Flow.Dst through Config.Dialer: the
// Host header is never resolved. A flow's upstream connections are pooled
// for that flow only (one http.Transport per guest connection) and closed
// with it. A TLS flow goes upstream over TLS verified against the system
// roots plus Config.ExtraRootsPEM for the flow's authority (below), or for
// Dst's address when there is none; HTTP/2 is used upstream when the
// origin offers it, independently of what the guest spoke. A cleartext
// flow goes upstream in cleartext. Outcomes the guest sees:
//
//	middleware error                    403 "network policy denied", nothing sent upstream
//	upstream certificate not verifiable 502, upstream got only the TLS handshake
//	upstream unreachable                502
//	Host/SNI disagrees (below)          421, middleware not called, nothing sent upstream
//	CONNECT                             405
//	TRACE                               405 (the origin would echo the injected headers)
//	upgrade refused by the middleware   403, nothing sent upstream
//
// Hop-by-hop headers the guest sends (RFC 9110's, and those its
// Connection header names) are hidden from the middleware and not
// forwarded; the guest's Connection header itself is not forwarded either,
// so naming a header the middleware set (Connection: Authorization) does
// not remove it. "TE: trailers" goes on.
//
// # Upgrades
//
// After a 101 the connection is a tunnel between the guest and the origin:
// the middleware sees nothing more of it. So an upgrade request
// (Connection naming "upgrade", with Upgrade) is shown to the middleware
// as "Upgrade: <protocols>" and "Connection: upgrade", and forwarded only
// as the middleware left it: an error refuses it (403, nothing upstream),
// and deleting either header sends a plain request instead (the origin
// answers it without switching). A middleware that ignores both lets the
// upgrade through, as a 0.6.0 middleware, which saw every header, did. An
// h2c upgrade is never forwarded: the guest would then send HTTP/2
// requests straight to the origin, none of them seen by the middleware.
// The h2c protocol (and HTTP2-Settings) is dropped from the request, which
// goes on as HTTP/1.1, as to an origin without h2c.
//
// # Authority rule
//
// Credentials must never reach a host other than the one they were
// injected for, and the middleware decides by Destination.Hostname, which
// only a DNS pin sets. So each connection has at most one authority: the
// pinned hostname if there is one, else the TLS SNI, else none (cleartext
// without a pin). Then:
//
//   - With a pin, a TLS SNI other than the pinned name (compared
//     case-insensitively, without trailing dot) makes every request of the
//     connection 421: the guest may have a certificate for the SNI, but no
//     request is forwarded. An absent SNI is allowed (the guest connected
//     by address; the leaf then covers the pinned name and the address).
//   - With an authority, a request whose Host (or :authority) names
//     another host is 421. The port is not compared; the Host may also be
//     Dst's address literal. The Host header is forwarded as sent.
//   - Upstream TLS is verified for the authority, so a request forwarded
//     with credentials for the pinned name reaches a server that proved to
//     be that name, at the pinned address.
//   - Without an authority (cleartext, no pin), any Host is forwarded to
//     Dst and the middleware sees Destination.Hostname == "": it must not
//     inject credentials on the strength of the Host header.
//   - Request.URL's host is the authority, else Dst's address, with Dst's
//     port (omitted when it is the scheme's default): never the Host
//     header, so a middleware that reads only the URL cannot be fooled
//     either. This is 0.6.0's rule (SNI, else pin, else original IP).
//
// # Why net/http and not goproxy
//
// github.com/elazarl/goproxy (read at v1.9.3) is built around an explicit
// proxy: ProxyHttpServer is an http.Handler that expects absolute-form
// requests or CONNECT, decides the upstream from the request's host, and
// implements MITM after CONNECT with its own HTTP/1 request loop, its own
// dialing (ctx.Dialer by address string) and a package-level default CA
// initialised in init(). Transparent interception needs the opposite: no
// CONNECT, a destination fixed by the flow and never taken from the
// request, one connection served per call, and TLS verification for a
// name the request does not choose. Fitting goproxy would mean faking a
// CONNECT per flow and overriding its dialer and certificate logic, which
// is most of what it offers. So this package uses net/http directly: an
// http.Server serving the one connection (its bundled HTTP/2 server is
// the same code as golang.org/x/net/http2 and takes over when ALPN chose
// h2), httputil.ReverseProxy for forwarding (hop-by-hop headers, trailers,
// 1xx, streaming, protocol upgrades), and an http.Transport per flow whose
// dialer ignores the request's address. Leaf minting is this package's CA.
//
// # Lifecycle
//
// New starts nothing. ServeConn blocks until the guest connection ends
// (closed, idle for Config.IdleTimeout, or ctx ended) and owns the
// connection. It starts goroutines only for that connection's requests.
package httpproxy
