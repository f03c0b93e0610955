package main

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"

	"golang.org/x/net/http/httpguts"

	"github.com/torkbot/sandbox/bridge/napi"
	"github.com/torkbot/sandbox/netpolicy/httpproxy"
)

// jsMiddleware is the HttpRequestMiddleware an acceptHttp grant named: each
// request of the flow is one "http" event, which src/http-middleware.ts
// answers with the headers to send upstream, or rejects (the middleware
// threw), which refuses the request.
type jsMiddleware struct {
	cb *napi.Callback
	id uint64
}

var _ httpproxy.Middleware = jsMiddleware{}

// httpEvent is src/http-middleware.ts's HttpEvent.
type httpEvent struct {
	MiddlewareID uint64        `json:"middlewareId"`
	Protocol     string        `json:"protocol"`
	URL          string        `json:"url"`
	Method       string        `json:"method"`
	Headers      [][2]string   `json:"headers"`
	Destination  jsDestination `json:"destination"`
	TLS          *jsTLS        `json:"tls,omitempty"`
}

type jsDestination struct {
	SourceIP     string `json:"sourceIp"`
	SourcePort   uint16 `json:"sourcePort"`
	OriginalIP   string `json:"originalIp"`
	OriginalPort uint16 `json:"originalPort"`
	Hostname     string `json:"hostname,omitempty"`
}

type jsTLS struct {
	SNI  string `json:"sni,omitempty"`
	ALPN string `json:"alpn,omitempty"`
}

// httpVerdict is the answer to an httpEvent.
type httpVerdict struct {
	Headers [][2]string `json:"headers"`
}

// maxMiddlewareHeaders bounds what a middleware may send upstream; far more
// than any real request carries.
const maxMiddlewareHeaders = 1000

func (m jsMiddleware) Handle(ctx context.Context, r *httpproxy.Request) error {
	ev := httpEvent{
		MiddlewareID: m.id,
		Protocol:     r.Protocol,
		URL:          r.URL.String(),
		Method:       r.Method,
		Headers:      headerPairs(r.Header),
		Destination: jsDestination{
			SourceIP:     r.Destination.SourceIP.Unmap().String(),
			SourcePort:   r.Destination.SourcePort,
			OriginalIP:   r.Destination.OriginalIP.Unmap().String(),
			OriginalPort: r.Destination.OriginalPort,
			Hostname:     r.Destination.Hostname,
		},
	}
	if r.TLS != nil {
		ev.TLS = &jsTLS{SNI: r.TLS.SNI, ALPN: r.TLS.ALPN}
	}
	payload, err := json.Marshal(ev)
	if err != nil {
		return err
	}
	out, err := m.cb.Call(ctx, "http", payload)
	if err != nil {
		return fmt.Errorf("http middleware: %w", err)
	}
	var v httpVerdict
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
			return nil, fmt.Errorf("invalid value for header %s", p[0])
		}
		h.Add(p[0], p[1])
	}
	return h, nil
}
