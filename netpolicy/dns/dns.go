// Package dns holds the sandbox resolver's pieces that do not depend on the
// network stack: parsing queries from the (hostile) guest, forwarding them
// to upstream resolvers, and the pin table that maps each address the
// resolver handed out back to the hostname it was asked for.
package dns

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strings"
	"sync"
	"time"

	mdns "github.com/miekg/dns"
)

var (
	// ErrNotQuery is returned by ParseQuery for a well-formed message that
	// is not a standard query with exactly one question.
	ErrNotQuery = errors.New("dns: not a standard query with one question")

	// ErrNoResolvers is returned by Exchange when given no resolver.
	ErrNoResolvers = errors.New("dns: no resolvers")
)

// ParseQuery parses a query sent by the guest. It accepts only standard
// queries (QR clear, opcode QUERY) with exactly one question.
func ParseQuery(b []byte) (*mdns.Msg, error) {
	m := new(mdns.Msg)
	if err := m.Unpack(b); err != nil {
		return nil, fmt.Errorf("dns: unpack query: %w", err)
	}
	if m.Response || m.Opcode != mdns.OpcodeQuery || len(m.Question) != 1 {
		return nil, ErrNotQuery
	}
	return m, nil
}

// Reply returns an empty answer to q with the given rcode.
func Reply(q *mdns.Msg, rcode int) *mdns.Msg {
	r := new(mdns.Msg)
	r.SetRcode(q, rcode)
	return r
}

// DialFunc dials an upstream resolver; network is "udp" or "tcp".
type DialFunc func(ctx context.Context, network, address string) (net.Conn, error)

// AttemptTimeout bounds one exchange with one resolver.
const AttemptTimeout = 5 * time.Second

// MaxTTL caps the TTL of every record the sandbox resolver hands the
// guest, and so the lifetime of the pins its answers make: a guest must not
// keep using an answer longer than the host keeps the name it pinned, and
// an upstream must not make a pin outlive every sweep.
const MaxTTL = 3600

// Exchange sends q over network ("udp" or "tcp") to each resolver in turn
// until one answers, and returns that answer: its ID is q's, its question
// is q's (a resolver that answers another question is skipped), and its
// TTLs are at most MaxTTL. The guest's CD (checking disabled) bit is not
// forwarded, so a validating resolver validates whatever the guest asks.
func Exchange(ctx context.Context, dial DialFunc, network string, resolvers []netip.AddrPort, q *mdns.Msg) (*mdns.Msg, error) {
	if len(resolvers) == 0 {
		return nil, ErrNoResolvers
	}
	if q.CheckingDisabled {
		q = q.Copy()
		q.CheckingDisabled = false
	}
	var errs []error
	for _, r := range resolvers {
		resp, err := exchangeOne(ctx, dial, network, r, q)
		if err == nil {
			return resp, nil
		}
		errs = append(errs, err)
		if ctx.Err() != nil {
			break
		}
	}
	return nil, fmt.Errorf("dns: no resolver answered: %w", errors.Join(errs...))
}

func exchangeOne(ctx context.Context, dial DialFunc, network string, resolver netip.AddrPort, q *mdns.Msg) (*mdns.Msg, error) {
	ctx, cancel := context.WithTimeout(ctx, AttemptTimeout)
	defer cancel()
	c, err := dial(ctx, network, resolver.String())
	if err != nil {
		return nil, fmt.Errorf("dial %s %s: %w", network, resolver, err)
	}
	defer c.Close()
	stop := context.AfterFunc(ctx, func() { c.Close() })
	defer stop()
	co := &mdns.Conn{Conn: c, UDPSize: mdns.MaxMsgSize}
	if err := co.WriteMsg(q); err != nil {
		return nil, fmt.Errorf("write query to %s: %w", resolver, err)
	}
	for {
		resp, err := co.ReadMsg()
		if err != nil {
			if ctx.Err() != nil {
				err = ctx.Err()
			}
			return nil, fmt.Errorf("read answer from %s: %w", resolver, err)
		}
		// Over UDP a stray datagram with another ID is skipped.
		if resp.Id != q.Id || !resp.Response {
			continue
		}
		if !sameQuestion(resp, q) {
			return nil, fmt.Errorf("answer from %s is for another question", resolver)
		}
		capTTLs(resp, MaxTTL)
		return resp, nil
	}
}

// sameQuestion reports whether resp answers q's one question (names
// compared as DNS does, without case).
func sameQuestion(resp, q *mdns.Msg) bool {
	if len(resp.Question) != 1 {
		return false
	}
	a, b := resp.Question[0], q.Question[0]
	return a.Qtype == b.Qtype && a.Qclass == b.Qclass && strings.EqualFold(mdns.Fqdn(a.Name), mdns.Fqdn(b.Name))
}

// capTTLs lowers every record's TTL in m to at most ttl. The OPT
// pseudo-record is left alone: its TTL field holds EDNS flags.
func capTTLs(m *mdns.Msg, ttl uint32) {
	for _, sec := range [][]mdns.RR{m.Answer, m.Ns, m.Extra} {
		for _, rr := range sec {
			if h := rr.Header(); h.Rrtype != mdns.TypeOPT && h.Ttl > ttl {
				h.Ttl = ttl
			}
		}
	}
}

// MinPinLifetime is the shortest time a pin is kept: a record's TTL or
// MinPinLifetime, whichever is longer. Guests cache answers past their TTL,
// and a connection made from a cached answer must still match its name.
const MinPinLifetime = 10 * time.Minute

// MaxPins bounds the pin table. When full, expired pins are swept; if none
// expired, new pins are not recorded (flows to those addresses then carry
// no hostname: the policy fails closed).
const MaxPins = 1 << 16

// maxChain bounds the CNAME chain followed from a question name.
const maxChain = 16

type pin struct {
	host    string
	expires time.Time
}

// Pins maps addresses handed out by the sandbox resolver to the hostname
// the guest asked for. It is safe for concurrent use. When the same address
// is answered for several names, the latest answer wins.
type Pins struct {
	now func() time.Time

	// mu guards m.
	mu sync.Mutex
	m  map[netip.Addr]pin
}

// NewPins returns an empty table. now is its clock; nil means time.Now.
func NewPins(now func() time.Time) *Pins {
	if now == nil {
		now = time.Now
	}
	return &Pins{now: now, m: make(map[netip.Addr]pin)}
}

// Lookup returns the hostname pinned to a, or "" if none (or expired).
// IPv4-mapped IPv6 addresses are looked up as IPv4.
func (p *Pins) Lookup(a netip.Addr) string {
	a = a.Unmap()
	p.mu.Lock()
	defer p.mu.Unlock()
	e, ok := p.m[a]
	if !ok || !p.now().Before(e.expires) {
		return ""
	}
	return e.host
}

// Record pins to the question's name the A and AAAA records of resp's
// answer section that the question's CNAME chain reaches (the question's
// name, or a name a CNAME of the chain points to). Nothing else is pinned:
// records for other names, and the additional section, are what a
// resolver (or whoever forged its answer) chose to add, and would let one
// answer claim addresses for names the guest never asked about. Names are
// lowercased, without the final dot.
func (p *Pins) Record(resp *mdns.Msg) {
	if resp == nil || resp.Rcode != mdns.RcodeSuccess {
		return
	}
	alias := make(map[string]string) // canonical owner name -> pinned name
	if len(resp.Question) == 1 {
		q := canonical(resp.Question[0].Name)
		alias[q] = q
	}
	for range maxChain {
		grew := false
		for _, rr := range resp.Answer {
			c, ok := rr.(*mdns.CNAME)
			if !ok {
				continue
			}
			owner, target := canonical(c.Hdr.Name), canonical(c.Target)
			if root, ok := alias[owner]; ok {
				if _, seen := alias[target]; !seen {
					alias[target] = root
					grew = true
				}
			}
		}
		if !grew {
			break
		}
	}
	now := p.now()
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, rr := range resp.Answer {
		var ip net.IP
		switch r := rr.(type) {
		case *mdns.A:
			ip = r.A
		case *mdns.AAAA:
			ip = r.AAAA
		default:
			continue
		}
		a, ok := netip.AddrFromSlice(ip)
		if !ok {
			continue
		}
		host, ok := alias[canonical(rr.Header().Name)]
		if !ok {
			continue // not on the question's chain
		}
		ttl := min(time.Duration(rr.Header().Ttl), MaxTTL) * time.Second
		life := max(ttl, MinPinLifetime)
		p.putLocked(a.Unmap(), pin{host: strings.TrimSuffix(host, "."), expires: now.Add(life)}, now)
	}
}

// putLocked stores e for a, keeping the later expiry of an existing pin of
// the same host.
//
// Precondition: p.mu is held.
func (p *Pins) putLocked(a netip.Addr, e pin, now time.Time) {
	if old, ok := p.m[a]; ok {
		if old.host == e.host && old.expires.After(e.expires) {
			e.expires = old.expires
		}
		p.m[a] = e
		return
	}
	if len(p.m) >= MaxPins {
		for k, v := range p.m {
			if !now.Before(v.expires) {
				delete(p.m, k)
			}
		}
		if len(p.m) >= MaxPins {
			return
		}
	}
	p.m[a] = e
}

func canonical(name string) string {
	return strings.ToLower(mdns.Fqdn(name))
}
