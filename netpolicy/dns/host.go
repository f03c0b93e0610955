package dns

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"strings"

	mdns "github.com/miekg/dns"
)

// HostTTL is the TTL of answers made from the host's own resolution: the
// one 0.6.0 gave them.
const HostTTL = 60

// LookupFunc resolves a name the way the host's programs do (the system
// resolver: /etc/hosts, then the host's nameservers), returning its IPv4
// and IPv6 addresses. An error that is a *net.DNSError with IsNotFound
// means the name does not exist.
type LookupFunc func(ctx context.Context, name string) ([]netip.Addr, error)

// SystemLookup is the LookupFunc of the host's resolver.
func SystemLookup(ctx context.Context, name string) ([]netip.Addr, error) {
	return net.DefaultResolver.LookupNetIP(ctx, "ip", name)
}

// AnswerFromHost answers q from the host's own resolution, as the sandbox
// resolver does for an accepted query that names no upstream resolver
// (0.6.0's "host environment resolver"). It therefore honours /etc/hosts,
// which forwarding the query to the host's nameservers would not.
//
// As in 0.6.0: an IN A question gets the name's IPv4 addresses, any other
// question an empty NOERROR when the name exists, and a name the host
// cannot resolve is NXDOMAIN. IN AAAA questions also get the name's IPv6
// addresses (0.6.0 had no IPv6). A failure other than "not found" (the
// host's nameservers unreachable or timing out) is SERVFAIL, so the guest
// retries rather than caching a negative answer.
func AnswerFromHost(ctx context.Context, lookup LookupFunc, q *mdns.Msg) *mdns.Msg {
	question := q.Question[0]
	// The guest's name without the final dot: the host's resolver then
	// treats it as its own programs' names are treated (0.6.0 did the same).
	name := strings.TrimSuffix(question.Name, ".")
	if name == "" {
		return Reply(q, mdns.RcodeNameError)
	}
	addrs, err := lookup(ctx, name)
	if err != nil {
		var dnsErr *net.DNSError
		if errors.As(err, &dnsErr) && dnsErr.IsNotFound {
			return Reply(q, mdns.RcodeNameError)
		}
		return Reply(q, mdns.RcodeServerFailure)
	}
	if len(addrs) == 0 {
		return Reply(q, mdns.RcodeNameError)
	}
	r := Reply(q, mdns.RcodeSuccess)
	r.RecursionAvailable = true
	if question.Qclass != mdns.ClassINET {
		return r
	}
	hdr := mdns.RR_Header{Name: question.Name, Class: mdns.ClassINET, Ttl: HostTTL}
	for _, a := range addrs {
		a = a.Unmap()
		switch {
		case question.Qtype == mdns.TypeA && a.Is4():
			hdr.Rrtype = mdns.TypeA
			r.Answer = append(r.Answer, &mdns.A{Hdr: hdr, A: a.AsSlice()})
		case question.Qtype == mdns.TypeAAAA && a.Is6():
			hdr.Rrtype = mdns.TypeAAAA
			r.Answer = append(r.Answer, &mdns.AAAA{Hdr: hdr, AAAA: a.AsSlice()})
		}
	}
	return r
}
