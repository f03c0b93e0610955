package netpolicy

import (
	"context"
	"fmt"
	"net"
	"net/netip"

	"github.com/torkbot/sandbox/netpolicy/httpproxy"
)

// Action is what a Policy decides for a flow.
type Action int

const (
	// Deny refuses the flow: TCP gets a reset, UDP datagrams are dropped,
	// a DNS query is answered REFUSED.
	Deny Action = iota
	// Accept relays the flow raw to its destination (TCP or UDP).
	Accept
	// AcceptHTTP routes a TCP flow through HTTP interception
	// (Config.HTTP): each request is shown to Decision.Middleware, and
	// bytes that are not HTTP close the flow. Without Config.HTTP it
	// denies: fail closed.
	AcceptHTTP
	// AcceptDNS forwards a DNS query (Flow.DNS) to Decision.Resolvers.
	// It is the only action that grants a DNS query.
	AcceptDNS
)

func (a Action) String() string {
	switch a {
	case Deny:
		return "deny"
	case Accept:
		return "accept"
	case AcceptHTTP:
		return "accept-http"
	case AcceptDNS:
		return "accept-dns"
	default:
		return fmt.Sprintf("Action(%d)", int(a))
	}
}

// Flow describes one policy event: a new TCP connection (on its SYN), a new
// UDP flow (5-tuple), or one DNS query to the sandbox resolver.
type Flow struct {
	// Transport is "tcp" or "udp".
	Transport string
	// Src is the guest's endpoint, Dst the destination it asked for.
	Src, Dst netip.AddrPort
	// DNS is set for a query to the sandbox resolver (Dst is then the
	// gateway's port 53); the decision applies to that query only.
	DNS bool
	// Hostname is the name the sandbox resolver pinned to Dst.Addr(), or ""
	// if its answers never named that address.
	Hostname string
}

// Decision is a Policy's answer for a Flow.
type Decision struct {
	Action Action
	// Resolvers are the upstream resolvers for AcceptDNS, tried in order;
	// empty means the host's own resolution (Config.HostLookup).
	Resolvers []netip.AddrPort
	// Middleware sees each request of an AcceptHTTP flow; nil passes them
	// unchanged.
	Middleware httpproxy.Middleware
	// Release, when set, is called once the decision is no longer needed:
	// when the flow it granted has ended, or at once when it granted
	// nothing. A policy that keeps per-decision state frees it here.
	Release func()
}

// Policy decides flows. Decide is called at most once per flow, before
// anything is sent upstream, from many goroutines at once; ctx ends when
// the stack stops, and Decide must return promptly then. An error denies.
type Policy interface {
	Decide(ctx context.Context, f Flow) (Decision, error)
}

// PolicyFunc adapts a function to Policy.
type PolicyFunc func(ctx context.Context, f Flow) (Decision, error)

// Decide implements Policy.
func (p PolicyFunc) Decide(ctx context.Context, f Flow) (Decision, error) { return p(ctx, f) }

// Dialer opens upstream connections for granted flows and DNS queries.
// network is "tcp" or "udp"; address is "host:port" with a literal IP.
// *net.Dialer implements it.
type Dialer interface {
	DialContext(ctx context.Context, network, address string) (net.Conn, error)
}

var _ Dialer = (*net.Dialer)(nil)
