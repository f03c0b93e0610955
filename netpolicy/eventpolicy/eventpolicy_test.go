package eventpolicy_test

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"net/netip"
	"net/url"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/torkbot/sandbox/native/protocol"
	"github.com/torkbot/sandbox/netpolicy"
	"github.com/torkbot/sandbox/netpolicy/eventpolicy"
	"github.com/torkbot/sandbox/netpolicy/httpproxy"
)

// jsSide plays src/boot.ts's dispatch to the policy evaluator: it records
// the events and answers each with what answer returns.
type jsSide struct {
	mu     sync.Mutex
	events []event
	answer func(event string, payload []byte) ([]byte, error)
}

type event struct {
	name    string
	payload string
}

func (j *jsSide) Call(ctx context.Context, name string, payload []byte) ([]byte, error) {
	j.mu.Lock()
	j.events = append(j.events, event{name, string(payload)})
	j.mu.Unlock()
	return j.answer(name, payload)
}

func (j *jsSide) recorded() []event {
	j.mu.Lock()
	defer j.mu.Unlock()
	return slices.Clone(j.events)
}

func answer(s string) func(string, []byte) ([]byte, error) {
	return func(string, []byte) ([]byte, error) { return []byte(s), nil }
}

var flow = netpolicy.Flow{
	Transport: "tcp",
	Src:       netip.MustParseAddrPort("[::ffff:10.0.2.15]:40000"),
	Dst:       netip.MustParseAddrPort("93.184.216.34:443"),
	Hostname:  "example.com",
}

// TestFlowEvent: the event is src/connection.ts's PolicyEvent, v4-mapped
// addresses unmapped, empty optional fields left out.
func TestFlowEvent(t *testing.T) {
	js := &jsSide{answer: answer(`{"action":"deny"}`)}
	if _, err := eventpolicy.New(js).Decide(context.Background(), flow); err != nil {
		t.Fatal(err)
	}
	want := `{"transport":"tcp","src":{"ip":"10.0.2.15","port":40000},"dst":{"ip":"93.184.216.34","port":443},"pinnedHostname":"example.com"}`
	if got := js.recorded(); len(got) != 1 || got[0] != (event{protocol.EventPolicy, want}) {
		t.Errorf("events %v, want one policy event %s", got, want)
	}
	js.events = nil
	dns := netpolicy.Flow{Transport: "udp", Src: flow.Src, Dst: netip.MustParseAddrPort("10.0.2.2:53"), DNS: true}
	eventpolicy.New(js).Decide(context.Background(), dns)
	if got := js.recorded()[0].payload; !strings.Contains(got, `"dnsQuery":true`) || strings.Contains(got, "pinnedHostname") {
		t.Errorf("dns flow event %s", got)
	}
}

// TestDecisions: each action JavaScript answers becomes its Decision; an
// answer the contract does not allow is an error (the stack denies).
func TestDecisions(t *testing.T) {
	for _, tc := range []struct {
		answer string
		want   netpolicy.Decision
		err    string
	}{
		{answer: `{"action":"deny"}`, want: netpolicy.Decision{Action: netpolicy.Deny}},
		{answer: `{"action":"accept"}`, want: netpolicy.Decision{Action: netpolicy.Accept}},
		{answer: `{"action":"http"}`, want: netpolicy.Decision{Action: netpolicy.AcceptHTTP}},
		{answer: `{"action":"dns"}`, want: netpolicy.Decision{Action: netpolicy.AcceptDNS}},
		{answer: `{"action":"dns","resolvers":[{"ip":"1.1.1.1"},{"ip":"2606:4700::1111","port":5353}]}`, want: netpolicy.Decision{
			Action:    netpolicy.AcceptDNS,
			Resolvers: []netip.AddrPort{netip.MustParseAddrPort("1.1.1.1:53"), netip.MustParseAddrPort("[2606:4700::1111]:5353")},
		}},
		{answer: `{"action":"dns","resolvers":[{"ip":"resolver.example"}]}`, err: `resolver "resolver.example"`},
		{answer: `{"action":"allow"}`, err: `unknown action "allow"`},
		{answer: `{}`, err: `unknown action ""`},
		{answer: `deny`, err: "network policy answered"},
		{answer: `{"action":"http","middlewareId":-1}`, err: "network policy answered"},
	} {
		got, err := eventpolicy.New(&jsSide{answer: answer(tc.answer)}).Decide(context.Background(), flow)
		if tc.err != "" {
			if err == nil || !strings.Contains(err.Error(), tc.err) {
				t.Errorf("%s: %+v, %v; want an error saying %q", tc.answer, got, err, tc.err)
			}
			continue
		}
		if err != nil || got.Action != tc.want.Action || !slices.Equal(got.Resolvers, tc.want.Resolvers) || got.Middleware != nil || got.Release != nil {
			t.Errorf("%s: %+v, %v; want %+v", tc.answer, got, err, tc.want)
		}
	}
	js := &jsSide{answer: func(string, []byte) ([]byte, error) { return nil, &protocol.JSError{Message: "policy threw"} }}
	if _, err := eventpolicy.New(js).Decide(context.Background(), flow); err == nil || !strings.Contains(err.Error(), "policy threw") {
		t.Errorf("a rejected event: %v", err)
	}
}

func request() *httpproxy.Request {
	return &httpproxy.Request{
		Protocol: httpproxy.ProtocolHTTP1,
		Method:   "GET",
		URL:      &url.URL{Scheme: "https", Host: "example.com", Path: "/p", RawQuery: "q=1"},
		Header:   http.Header{"Accept": {"*/*"}, "Cookie": {"a=1", "b=2"}},
		Destination: httpproxy.Destination{
			SourceIP: netip.MustParseAddr("::ffff:10.0.2.15"), SourcePort: 40000,
			OriginalIP: netip.MustParseAddr("93.184.216.34"), OriginalPort: 443, Hostname: "example.com",
		},
		TLS: &httpproxy.TLSInfo{SNI: "example.com", ALPN: "http/1.1"},
	}
}

// TestMiddleware: an "http" decision with a middleware id runs each
// request through an "http" event carrying that id; the answer's headers
// replace the request's; the flow's end sends "http-release" once.
func TestMiddleware(t *testing.T) {
	js := &jsSide{}
	js.answer = func(name string, payload []byte) ([]byte, error) {
		switch name {
		case protocol.EventPolicy:
			return []byte(`{"action":"http","middlewareId":7}`), nil
		case protocol.EventHTTP:
			return []byte(`{"headers":[["accept","*/*"],["authorization","Bearer x"],["set-cookie","a"],["set-cookie","b"]]}`), nil
		}
		return nil, nil
	}
	d, err := eventpolicy.New(js).Decide(context.Background(), flow)
	if err != nil || d.Action != netpolicy.AcceptHTTP || d.Middleware == nil || d.Release == nil {
		t.Fatalf("decision %+v, %v", d, err)
	}
	r := request()
	if err := d.Middleware.Handle(context.Background(), r); err != nil {
		t.Fatal(err)
	}
	want := http.Header{"Accept": {"*/*"}, "Authorization": {"Bearer x"}, "Set-Cookie": {"a", "b"}}
	if !equalHeader(r.Header, want) {
		t.Errorf("upstream header %v, want %v", r.Header, want)
	}
	var ev struct {
		MiddlewareID uint64      `json:"middlewareId"`
		Protocol     string      `json:"protocol"`
		URL          string      `json:"url"`
		Method       string      `json:"method"`
		Headers      [][2]string `json:"headers"`
		Destination  struct {
			SourceIP, OriginalIP     string
			SourcePort, OriginalPort uint16
			Hostname                 string
		} `json:"destination"`
		TLS *struct{ SNI, ALPN string } `json:"tls"`
	}
	if err := json.Unmarshal([]byte(js.recorded()[1].payload), &ev); err != nil {
		t.Fatal(err)
	}
	slices.SortFunc(ev.Headers, func(a, b [2]string) int { return strings.Compare(a[0], b[0]) })
	if ev.MiddlewareID != 7 || ev.Protocol != "http/1.1" || ev.URL != "https://example.com/p?q=1" || ev.Method != "GET" ||
		!slices.Equal(ev.Headers, [][2]string{{"Accept", "*/*"}, {"Cookie", "a=1; b=2"}}) ||
		ev.Destination.SourceIP != "10.0.2.15" || ev.Destination.OriginalPort != 443 || ev.Destination.Hostname != "example.com" ||
		ev.TLS == nil || ev.TLS.SNI != "example.com" || ev.TLS.ALPN != "http/1.1" {
		t.Errorf("http event %+v", ev)
	}

	d.Release()
	deadline := time.Now().Add(5 * time.Second)
	for !slices.Contains(js.recorded(), event{protocol.EventHTTPRelease, "7"}) {
		if time.Now().After(deadline) {
			t.Fatalf("no http-release 7 among %v", js.recorded())
		}
		time.Sleep(time.Millisecond)
	}
}

func equalHeader(a, b http.Header) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if !slices.Equal(v, b[k]) {
			return false
		}
	}
	return true
}

// TestMiddlewareRefuses: a middleware that threw, an unreadable answer or
// headers that would break the request's framing refuse the request and
// leave its headers as they were.
func TestMiddlewareRefuses(t *testing.T) {
	many := `{"headers":[` + strings.Repeat(`["a","b"],`, 1000) + `["a","b"]]}`
	for _, tc := range []struct {
		answer string
		err    error
		want   string
	}{
		{err: &protocol.JSError{Message: "middleware threw"}, want: "middleware threw"},
		{answer: `{"headers":"x"}`, want: "http middleware answered"},
		{answer: `{"headers":[["bad name","v"]]}`, want: `invalid header name "bad name"`},
		{answer: `{"headers":[["x-a","v\r\nx-b: injected"]]}`, want: "invalid value for header x-a"},
		{answer: `{"headers":[["x-a","nul\u0000"]]}`, want: "invalid value for header x-a"},
		{answer: many, want: "more than 1000 headers"},
	} {
		js := &jsSide{answer: func(name string, _ []byte) ([]byte, error) {
			if name == protocol.EventPolicy {
				return []byte(`{"action":"http","middlewareId":1}`), nil
			}
			return []byte(tc.answer), tc.err
		}}
		d, err := eventpolicy.New(js).Decide(context.Background(), flow)
		if err != nil {
			t.Fatal(err)
		}
		r := request()
		before := r.Header.Clone()
		err = d.Middleware.Handle(context.Background(), r)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("answer %.60s: %v, want an error saying %q", tc.answer, err, tc.want)
		}
		if !equalHeader(r.Header, before) {
			t.Errorf("a refused request's headers changed to %v", r.Header)
		}
		if errors.Is(err, context.Canceled) {
			t.Errorf("unexpected cancellation")
		}
	}
}

// TestConcurrent: many flows and requests share one Caller (the stack
// decides from many goroutines); run under -race.
func TestConcurrent(t *testing.T) {
	js := &jsSide{answer: func(name string, _ []byte) ([]byte, error) {
		if name == protocol.EventPolicy {
			return []byte(`{"action":"http","middlewareId":3}`), nil
		}
		return []byte(`{"headers":[["x","y"]]}`), nil
	}}
	p := eventpolicy.New(js)
	var wg sync.WaitGroup
	for range 16 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			d, err := p.Decide(context.Background(), flow)
			if err != nil {
				t.Error(err)
				return
			}
			if err := d.Middleware.Handle(context.Background(), request()); err != nil {
				t.Error(err)
			}
			d.Release()
		}()
	}
	wg.Wait()
}
