package dns_test

import (
	"context"
	"net"
	"net/netip"
	"sync/atomic"
	"testing"
	"time"

	mdns "github.com/miekg/dns"

	"github.com/torkbot/sandbox/netpolicy/dns"
)

// upstream is a resolver on loopback; answer builds its reply to a query.
func upstream(t *testing.T, answer func(q *mdns.Msg) *mdns.Msg) netip.AddrPort {
	t.Helper()
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := &mdns.Server{PacketConn: pc, Handler: mdns.HandlerFunc(func(w mdns.ResponseWriter, q *mdns.Msg) {
		w.WriteMsg(answer(q))
	})}
	go s.ActivateAndServe()
	t.Cleanup(func() { s.Shutdown() })
	return netip.MustParseAddrPort(pc.LocalAddr().String())
}

func exchange(t *testing.T, resolvers []netip.AddrPort, q *mdns.Msg) (*mdns.Msg, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var d net.Dialer
	return dns.Exchange(ctx, d.DialContext, "udp", resolvers, q)
}

func TestExchangeSanitizes(t *testing.T) {
	var sawCD atomic.Bool
	good := upstream(t, func(q *mdns.Msg) *mdns.Msg {
		sawCD.Store(q.CheckingDisabled)
		r := new(mdns.Msg)
		r.SetReply(q)
		r.Answer = []mdns.RR{&mdns.A{Hdr: mdns.RR_Header{Name: q.Question[0].Name, Rrtype: mdns.TypeA, Class: mdns.ClassINET, Ttl: 1 << 30}, A: net.IPv4(198, 51, 100, 10)}}
		r.SetEdns0(4096, true) // an OPT record: its TTL field is flags, left alone
		return r
	})
	// A resolver (or a forger) that answers a question nobody asked.
	other := upstream(t, func(q *mdns.Msg) *mdns.Msg {
		r := new(mdns.Msg)
		r.SetReply(q)
		r.Question[0].Name = "bank.test."
		r.Answer = []mdns.RR{&mdns.A{Hdr: mdns.RR_Header{Name: "bank.test.", Rrtype: mdns.TypeA, Class: mdns.ClassINET, Ttl: 60}, A: net.IPv4(203, 0, 113, 66)}}
		return r
	})

	q := new(mdns.Msg)
	q.SetQuestion("API.example.test.", mdns.TypeA)
	q.CheckingDisabled = true
	resp, err := exchange(t, []netip.AddrPort{other, good}, q)
	if err != nil {
		t.Fatal(err)
	}
	if sawCD.Load() {
		t.Error("the guest's CD bit reached the upstream resolver")
	}
	if !q.CheckingDisabled {
		t.Error("Exchange changed the caller's query")
	}
	if len(resp.Answer) != 1 || resp.Answer[0].Header().Ttl != dns.MaxTTL {
		t.Errorf("answer %v: want one record with its TTL capped to %d", resp.Answer, dns.MaxTTL)
	}
	if opt := resp.IsEdns0(); opt == nil || !opt.Do() {
		t.Errorf("EDNS flags changed: %v", opt)
	}
	if got := resp.Answer[0].(*mdns.A).A.String(); got != "198.51.100.10" {
		t.Errorf("answer from the resolver that answered another question: %s", got)
	}

	if _, err := exchange(t, []netip.AddrPort{other}, q); err == nil {
		t.Error("an answer to another question was accepted")
	}
}
