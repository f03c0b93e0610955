package dns_test

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	mdns "github.com/miekg/dns"

	"github.com/torkbot/sandbox/netpolicy/dns"
)

func TestParseQuery(t *testing.T) {
	q := new(mdns.Msg)
	q.SetQuestion("example.test.", mdns.TypeA)
	good, _ := q.Pack()
	resp := new(mdns.Msg)
	resp.SetReply(q)
	answer, _ := resp.Pack()
	two := q.Copy()
	two.Question = append(two.Question, two.Question[0])
	twoB, _ := two.Pack()
	for _, tc := range []struct {
		name    string
		in      []byte
		wantErr bool
	}{
		{"query", good, false},
		{"response", answer, true},
		{"two questions", twoB, true},
		{"garbage", []byte{1, 2, 3}, true},
		{"empty", nil, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := dns.ParseQuery(tc.in)
			if (err != nil) != tc.wantErr {
				t.Fatalf("ParseQuery err = %v, wantErr %v", err, tc.wantErr)
			}
		})
	}
	if _, err := dns.ParseQuery(answer); !errors.Is(err, dns.ErrNotQuery) {
		t.Errorf("response: err = %v, want ErrNotQuery", err)
	}
}

func mustRR(t *testing.T, s string) mdns.RR {
	t.Helper()
	rr, err := mdns.NewRR(s)
	if err != nil {
		t.Fatal(err)
	}
	return rr
}

func TestPinsRecord(t *testing.T) {
	now := time.Unix(1000, 0)
	p := dns.NewPins(func() time.Time { return now })
	q := new(mdns.Msg)
	q.SetQuestion("WWW.Example.test.", mdns.TypeA)
	r := new(mdns.Msg)
	r.SetReply(q)
	r.Answer = []mdns.RR{
		mustRR(t, "www.example.test. 30 IN CNAME edge.cdn.test."),
		mustRR(t, "edge.cdn.test. 30 IN CNAME node.cdn.test."),
		mustRR(t, "node.cdn.test. 30 IN A 198.51.100.10"),
		mustRR(t, "node.cdn.test. 3600 IN AAAA 2001:db8::10"),
		mustRR(t, "other.test. 30 IN A 198.51.100.11"),
	}
	r.Extra = []mdns.RR{
		mustRR(t, "edge.cdn.test. 30 IN A 198.51.100.12"),
		mustRR(t, "ns.test. 30 IN A 198.51.100.13"),
	}
	p.Record(r)
	for addr, want := range map[string]string{
		"198.51.100.10":        "www.example.test",
		"::ffff:198.51.100.10": "www.example.test",
		"2001:db8::10":         "www.example.test",
		"198.51.100.11":        "", // another name in the answer: not the question's
		"198.51.100.12":        "", // additional section: not an answer
		"198.51.100.13":        "",
		"198.51.100.99":        "",
	} {
		if got := p.Lookup(netip.MustParseAddr(addr)); got != want {
			t.Errorf("Lookup(%s) = %q, want %q", addr, got, want)
		}
	}
	// Kept for at least MinPinLifetime despite a 30 s TTL, TTL when longer.
	now = now.Add(dns.MinPinLifetime - time.Second)
	if got := p.Lookup(netip.MustParseAddr("198.51.100.10")); got != "www.example.test" {
		t.Errorf("before MinPinLifetime: %q", got)
	}
	now = now.Add(2 * time.Second)
	if got := p.Lookup(netip.MustParseAddr("198.51.100.10")); got != "" {
		t.Errorf("after MinPinLifetime: %q", got)
	}
	if got := p.Lookup(netip.MustParseAddr("2001:db8::10")); got != "www.example.test" {
		t.Errorf("TTL 3600 expired early: %q", got)
	}
	// A TTL past MaxTTL pins for MaxTTL only.
	long := new(mdns.Msg)
	long.SetQuestion("long.test.", mdns.TypeA)
	long.Response = true
	long.Answer = []mdns.RR{mustRR(t, "long.test. 2147483647 IN A 198.51.100.30")}
	p.Record(long)
	now = now.Add(dns.MaxTTL*time.Second - time.Second)
	if got := p.Lookup(netip.MustParseAddr("198.51.100.30")); got != "long.test" {
		t.Errorf("before MaxTTL: %q", got)
	}
	now = now.Add(2 * time.Second)
	if got := p.Lookup(netip.MustParseAddr("198.51.100.30")); got != "" {
		t.Errorf("a pin outlived MaxTTL: %q", got)
	}
	// Failed answers pin nothing.
	r2 := r.Copy()
	r2.Rcode = mdns.RcodeNameError
	r2.Answer = []mdns.RR{mustRR(t, "x.test. 30 IN A 198.51.100.20")}
	p.Record(r2)
	if got := p.Lookup(netip.MustParseAddr("198.51.100.20")); got != "" {
		t.Errorf("NXDOMAIN pinned %q", got)
	}
}

func TestAnswerFromHost(t *testing.T) {
	hosts := map[string][]netip.Addr{
		"both.test": {netip.MustParseAddr("198.51.100.10"), netip.MustParseAddr("2001:db8::10"), netip.MustParseAddr("::ffff:198.51.100.11")},
		"v6.test":   {netip.MustParseAddr("2001:db8::20")},
	}
	var asked []string
	lookup := func(_ context.Context, name string) ([]netip.Addr, error) {
		asked = append(asked, name)
		if name == "flaky.test" {
			return nil, &net.DNSError{Err: "i/o timeout", Name: name, IsTimeout: true}
		}
		if a, ok := hosts[strings.ToLower(name)]; ok {
			return a, nil
		}
		return nil, &net.DNSError{Err: "no such host", Name: name, IsNotFound: true}
	}
	for _, tc := range []struct {
		name  string
		qtype uint16
		rcode int
		want  []string
	}{
		{"both.test.", mdns.TypeA, mdns.RcodeSuccess, []string{"both.test.\t60\tIN\tA\t198.51.100.10", "both.test.\t60\tIN\tA\t198.51.100.11"}},
		{"Both.Test.", mdns.TypeAAAA, mdns.RcodeSuccess, []string{"Both.Test.\t60\tIN\tAAAA\t2001:db8::10"}},
		{"both.test.", mdns.TypeMX, mdns.RcodeSuccess, nil},    // the name exists: empty NOERROR
		{"v6.test.", mdns.TypeA, mdns.RcodeSuccess, nil},       // exists, no IPv4
		{"nope.test.", mdns.TypeA, mdns.RcodeNameError, nil},   // 0.6.0: NXDOMAIN
		{"nope.test.", mdns.TypeTXT, mdns.RcodeNameError, nil}, // any type of a missing name
		{"flaky.test.", mdns.TypeA, mdns.RcodeServerFailure, nil},
		{".", mdns.TypeA, mdns.RcodeNameError, nil},
	} {
		q := new(mdns.Msg)
		q.SetQuestion(tc.name, tc.qtype)
		r := dns.AnswerFromHost(context.Background(), lookup, q)
		var got []string
		for _, rr := range r.Answer {
			got = append(got, rr.String())
		}
		if r.Rcode != tc.rcode || r.Id != q.Id || !r.Response || !slices.Equal(got, tc.want) {
			t.Errorf("%s %s: rcode %s, answers %q; want %s, %q", tc.name, mdns.TypeToString[tc.qtype], mdns.RcodeToString[r.Rcode], got, mdns.RcodeToString[tc.rcode], tc.want)
		}
	}
	// The host resolver is asked for the name without its final dot, as
	// the host's own programs would write it (search domains apply).
	if asked[0] != "both.test" {
		t.Errorf("asked %q", asked[0])
	}
}

// FuzzGuestQuery feeds guest bytes through what the resolver does with
// them: parse, refuse, and pin whatever a reply built from it carries.
func FuzzGuestQuery(f *testing.F) {
	q := new(mdns.Msg)
	q.SetQuestion("example.test.", mdns.TypeA)
	q.SetEdns0(4096, true)
	b, _ := q.Pack()
	f.Add(b)
	r := new(mdns.Msg)
	r.SetReply(q)
	r.Answer = []mdns.RR{&mdns.A{Hdr: mdns.RR_Header{Name: "example.test.", Rrtype: mdns.TypeA, Class: mdns.ClassINET, Ttl: 1}, A: []byte{192, 0, 2, 1}}}
	b, _ = r.Pack()
	f.Add(b)
	f.Add([]byte{0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0xc0, 0x0c})
	f.Fuzz(func(t *testing.T, in []byte) {
		p := dns.NewPins(nil)
		if m, err := dns.ParseQuery(in); err == nil {
			out := dns.Reply(m, mdns.RcodeRefused)
			out.Truncate(mdns.MinMsgSize)
			if _, err := out.Pack(); err != nil {
				t.Fatalf("cannot pack reply: %v", err)
			}
		}
		// The same bytes as an upstream answer.
		m := new(mdns.Msg)
		if m.Unpack(in) == nil {
			p.Record(m)
		}
	})
}
