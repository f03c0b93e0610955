package main

import (
	"context"
	"encoding/json"
	"fmt"
	"net/netip"
	"strconv"

	"github.com/torkbot/sandbox/bridge/napi"
	"github.com/torkbot/sandbox/netpolicy"
)

// jsPolicy is the user's network.policy handler, living in JavaScript, seen
// by netpolicy as a Policy: each flow is one "policy" event on the boot
// request's kept handler; src/policy-evaluation.ts runs the handler and
// answers with the decision.
type jsPolicy struct{ cb *napi.Callback }

var _ netpolicy.Policy = jsPolicy{}

type jsAddress struct {
	IP   string `json:"ip"`
	Port uint16 `json:"port"`
}

func address(ap netip.AddrPort) jsAddress {
	return jsAddress{IP: ap.Addr().Unmap().String(), Port: ap.Port()}
}

// policyEvent is src/connection.ts's PolicyEvent.
type policyEvent struct {
	Transport      string    `json:"transport"`
	Src            jsAddress `json:"src"`
	Dst            jsAddress `json:"dst"`
	DNSQuery       bool      `json:"dnsQuery,omitempty"`
	PinnedHostname string    `json:"pinnedHostname,omitempty"`
}

// policyDecision is src/policy-evaluation.ts's PolicyDecision.
type policyDecision struct {
	Action    string      `json:"action"`
	Resolvers []jsAddress `json:"resolvers"`
	// MiddlewareID names the JS middleware of an "http" decision; 0 for
	// none.
	MiddlewareID uint64 `json:"middlewareId"`
}

func (p jsPolicy) Decide(ctx context.Context, f netpolicy.Flow) (netpolicy.Decision, error) {
	event, err := json.Marshal(policyEvent{
		Transport:      f.Transport,
		Src:            address(f.Src),
		Dst:            address(f.Dst),
		DNSQuery:       f.DNS,
		PinnedHostname: f.Hostname,
	})
	if err != nil {
		return netpolicy.Decision{}, err
	}
	out, err := p.cb.Call(ctx, "policy", event)
	if err != nil {
		return netpolicy.Decision{}, fmt.Errorf("network policy: %w", err)
	}
	var d policyDecision
	if err := json.Unmarshal(out, &d); err != nil {
		return netpolicy.Decision{}, fmt.Errorf("network policy answered %q: %w", out, err)
	}
	switch d.Action {
	case "deny":
		return netpolicy.Decision{Action: netpolicy.Deny}, nil
	case "accept":
		return netpolicy.Decision{Action: netpolicy.Accept}, nil
	case "http":
		dec := netpolicy.Decision{Action: netpolicy.AcceptHTTP}
		if id := d.MiddlewareID; id != 0 {
			dec.Middleware = jsMiddleware{cb: p.cb, id: id}
			dec.Release = func() { p.releaseMiddleware(id) }
		}
		return dec, nil
	case "dns":
		dec := netpolicy.Decision{Action: netpolicy.AcceptDNS}
		for _, r := range d.Resolvers {
			addr, err := netip.ParseAddr(r.IP)
			if err != nil {
				return netpolicy.Decision{}, fmt.Errorf("network policy: resolver %q: %w", r.IP, err)
			}
			port := r.Port
			if port == 0 {
				port = 53
			}
			dec.Resolvers = append(dec.Resolvers, netip.AddrPortFrom(addr, port))
		}
		return dec, nil
	}
	return netpolicy.Decision{}, fmt.Errorf("network policy answered unknown action %q", d.Action)
}

// releaseMiddleware tells JavaScript to forget a flow's middleware. It does
// not wait: the flow is over, and a failure only means JavaScript is gone.
func (p jsPolicy) releaseMiddleware(id uint64) {
	go p.cb.Call(context.Background(), "http-release", strconv.AppendUint(nil, id, 10))
}
