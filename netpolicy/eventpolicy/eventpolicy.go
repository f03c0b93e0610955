// Package eventpolicy is a netpolicy.Policy and its HTTP middleware whose
// decisions are made on the other side of a request/response event
// channel: in the addon, the user's network.policy handler in JavaScript,
// reached through the boot request's kept handler (src/boot.ts dispatches
// the events to src/policy-evaluation.ts and src/http-middleware.ts). It
// defines the JSON of those events and checks every answer: a decision or
// header set JavaScript got wrong denies the flow or refuses the request,
// never reaches the stack half-read.
//
// # Events
//
//	event         payload (Go → JS)                          answer (JS → Go)
//	policy        JSON {transport, src, dst, dnsQuery?,     JSON {action, resolvers?, middlewareId?}
//	              pinnedHostname?}; src, dst: {ip, port}
//	http          JSON {middlewareId, protocol, url, method, JSON {headers: [[name, value]...]}
//	              headers, destination, tls?}
//	http-release  decimal middlewareId                       nothing
//
// action is "deny", "accept", "http" (HTTP interception; middlewareId,
// when not 0, names the middleware to run per request) or "dns" (resolvers
// [{ip, port}], port 0 meaning 53; none means the host's own resolution).
// An "http" answer's headers replace the request's headers upstream; a
// rejection (the middleware threw) refuses the request. "http-release"
// tells JavaScript a flow with middleware has ended, so it can forget it.
package eventpolicy

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/netip"
	"strconv"
	"strings"

	"golang.org/x/net/http/httpguts"

	"github.com/torkbot/sandbox/native/protocol"
	"github.com/torkbot/sandbox/netpolicy"
	"github.com/torkbot/sandbox/netpolicy/httpproxy"
)

// Policy asks JavaScript for every flow's decision. Safe for concurrent
// use if its Caller is.
type Policy struct{ c protocol.Caller }

var _ netpolicy.Policy = (*Policy)(nil)

// New returns the policy that c reaches.
func New(c protocol.Caller) *Policy { return &Policy{c: c} }

type address struct {
	IP   string `json:"ip"`
	Port uint16 `json:"port"`
}

func addressOf(ap netip.AddrPort) address {
	return address{IP: ap.Addr().Unmap().String(), Port: ap.Port()}
}

// flowEvent is src/connection.ts's PolicyEvent.
type flowEvent struct {
	Transport      string  `json:"transport"`
	Src            address `json:"src"`
	Dst            address `json:"dst"`
	DNSQuery       bool    `json:"dnsQuery,omitempty"`
	PinnedHostname string  `json:"pinnedHostname,omitempty"`
}

// decision is src/policy-evaluation.ts's PolicyDecision.
type decision struct {
	Action       string    `json:"action"`
	Resolvers    []address `json:"resolvers"`
	MiddlewareID uint64    `json:"middlewareId"`
}

// Decide sends a "policy" event. An error (JavaScript gone, an answer the
// contract does not allow) denies the flow.
func (p *Policy) Decide(ctx context.Context, f netpolicy.Flow) (netpolicy.Decision, error) {
	event, err := json.Marshal(flowEvent{
		Transport:      f.Transport,
		Src:            addressOf(f.Src),
		Dst:            addressOf(f.Dst),
		DNSQuery:       f.DNS,
		PinnedHostname: f.Hostname,
	})
	if err != nil {
		return netpolicy.Decision{}, err
	}
	out, err := p.c.Call(ctx, protocol.EventPolicy, event)
	if err != nil {
		return netpolicy.Decision{}, fmt.Errorf("network policy: %w", err)
	}
	var d decision
	if err := json.Unmarshal(out, &d); err != nil {
		return netpolicy.Decision{}, fmt.Errorf("network policy answered %.100q: %w", out, err)
	}
	switch d.Action {
	case "deny":
		return netpolicy.Decision{Action: netpolicy.Deny}, nil
	case "accept":
		return netpolicy.Decision{Action: netpolicy.Accept}, nil
	case "http":
		dec := netpolicy.Decision{Action: netpolicy.AcceptHTTP}
		if id := d.MiddlewareID; id != 0 {
			dec.Middleware = Middleware{c: p.c, id: id}
			dec.Release = func() { p.release(id) }
		}
		return dec, nil
	case "dns":
		dec := netpolicy.Decision{Action: netpolicy.AcceptDNS}
		for _, r := range d.Resolvers {
			addr, err := netip.ParseAddr(r.IP)
			if err != nil {
				return netpolicy.Decision{}, fmt.Errorf("network policy: resolver %.60q: %w", r.IP, err)
			}
			port := r.Port
			if port == 0 {
				port = 53
			}
			dec.Resolvers = append(dec.Resolvers, netip.AddrPortFrom(addr, port))
		}
		return dec, nil
	}
	return netpolicy.Decision{}, fmt.Errorf("network policy answered unknown action %.40q", d.Action)
}

// release tells JavaScript to forget a flow's middleware. It does not
// wait: the flow is over, and a failure only means JavaScript is gone.
func (p *Policy) release(id uint64) {
	go p.c.Call(context.Background(), protocol.EventHTTPRelease, strconv.AppendUint(nil, id, 10))
}

// Middleware is the HttpRequestMiddleware an "http" decision named: each
// request of the flow is one "http" event.
type Middleware struct {
	c  protocol.Caller
	id uint64
}

var _ httpproxy.Middleware = Middleware{}

// requestEvent is src/http-middleware.ts's HttpEvent.
type requestEvent struct {
	MiddlewareID uint64      `json:"middlewareId"`
	Protocol     string      `json:"protocol"`
	URL          string      `json:"url"`
	Method       string      `json:"method"`
	Headers      [][2]string `json:"headers"`
	Destination  destination `json:"destination"`
	TLS          *tlsInfo    `json:"tls,omitempty"`
}

type destination struct {
	SourceIP     string `json:"sourceIp"`
	SourcePort   uint16 `json:"sourcePort"`
	OriginalIP   string `json:"originalIp"`
	OriginalPort uint16 `json:"originalPort"`
	Hostname     string `json:"hostname,omitempty"`
}

type tlsInfo struct {
	SNI  string `json:"sni,omitempty"`
	ALPN string `json:"alpn,omitempty"`
}

// verdict is the answer to a requestEvent.
type verdict struct {
	Headers [][2]string `json:"headers"`
}

// maxMiddlewareHeaders bounds what a middleware may send upstream; far more
// than any real request carries.
const maxMiddlewareHeaders = 1000

// Handle sends an "http" event and replaces r.Header with the answer.
func (m Middleware) Handle(ctx context.Context, r *httpproxy.Request) error {
	ev := requestEvent{
		MiddlewareID: m.id,
		Protocol:     r.Protocol,
		URL:          r.URL.String(),
		Method:       r.Method,
		Headers:      headerPairs(r.Header),
		Destination: destination{
			SourceIP:     r.Destination.SourceIP.Unmap().String(),
			SourcePort:   r.Destination.SourcePort,
			OriginalIP:   r.Destination.OriginalIP.Unmap().String(),
			OriginalPort: r.Destination.OriginalPort,
			Hostname:     r.Destination.Hostname,
		},
	}
	if r.TLS != nil {
		ev.TLS = &tlsInfo{SNI: r.TLS.SNI, ALPN: r.TLS.ALPN}
	}
	payload, err := json.Marshal(ev)
	if err != nil {
		return err
	}
	out, err := m.c.Call(ctx, protocol.EventHTTP, payload)
	if err != nil {
		return fmt.Errorf("http middleware: %w", err)
	}
	var v verdict
	if err := json.Unmarshal(out, &v); err != nil {
		return fmt.Errorf("http middleware answered %.100q: %w", out, err)
	}
	h, err := upstreamHeader(v.Headers)
	if err != nil {
		return fmt.Errorf("http middleware: %w", err)
	}
	r.Header = h
	return nil
}

// headerPairs lists h in the order JavaScript's Headers keeps (it sorts by
// name anyway). Cookie fields are joined with "; ", the one separator a
// Cookie header allows (HTTP/2 may split it into several fields), because
// Headers would join them with ", ".
func headerPairs(h http.Header) [][2]string {
	pairs := make([][2]string, 0, len(h))
	for name, values := range h {
		if strings.EqualFold(name, "Cookie") && len(values) > 1 {
			values = []string{strings.Join(values, "; ")}
		}
		for _, v := range values {
			pairs = append(pairs, [2]string{name, v})
		}
	}
	return pairs
}

// upstreamHeader checks what the middleware returned: it is what goes to
// the origin, so a name or value that would break the request framing
// (CR, LF, NUL, a non-token name) refuses the request.
func upstreamHeader(pairs [][2]string) (http.Header, error) {
	if len(pairs) > maxMiddlewareHeaders {
		return nil, fmt.Errorf("more than %d headers", maxMiddlewareHeaders)
	}
	h := make(http.Header, len(pairs))
	for _, p := range pairs {
		if !httpguts.ValidHeaderFieldName(p[0]) {
			return nil, fmt.Errorf("invalid header name %.100q", p[0])
		}
		if !httpguts.ValidHeaderFieldValue(p[1]) {
			return nil, fmt.Errorf("invalid value for header %.100s", p[0])
		}
		h.Add(p[0], p[1])
	}
	return h, nil
}
