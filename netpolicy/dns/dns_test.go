package dns_test

import (
	"errors"
	"net/netip"
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
		"198.51.100.11":        "other.test",
		"198.51.100.12":        "www.example.test",
		"198.51.100.13":        "ns.test",
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
	// Failed answers pin nothing.
	r2 := r.Copy()
	r2.Rcode = mdns.RcodeNameError
	r2.Answer = []mdns.RR{mustRR(t, "x.test. 30 IN A 198.51.100.20")}
	p.Record(r2)
	if got := p.Lookup(netip.MustParseAddr("198.51.100.20")); got != "" {
		t.Errorf("NXDOMAIN pinned %q", got)
	}
}

func TestHostResolvers(t *testing.T) {
	path := t.TempDir() + "/resolv.conf"
	if err := writeFile(path, "nameserver 192.0.2.53\nnameserver 2001:db8::53\nnameserver fe80::1%eth0\n"); err != nil {
		t.Fatal(err)
	}
	got, err := dns.HostResolvers(path)
	if err != nil {
		t.Fatal(err)
	}
	want := []netip.AddrPort{netip.MustParseAddrPort("192.0.2.53:53"), netip.MustParseAddrPort("[2001:db8::53]:53"), netip.MustParseAddrPort("[fe80::1%eth0]:53")}
	if len(got) != len(want) || got[0] != want[0] || got[1] != want[1] || got[2] != want[2] {
		t.Fatalf("HostResolvers = %v, want %v", got, want)
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
