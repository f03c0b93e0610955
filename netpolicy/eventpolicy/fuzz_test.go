package eventpolicy_test

import (
	"context"
	"net/http"
	"testing"

	"golang.org/x/net/http/httpguts"

	"github.com/torkbot/sandbox/native/protocol"
	"github.com/torkbot/sandbox/netpolicy"
	"github.com/torkbot/sandbox/netpolicy/eventpolicy"
)

// FuzzDecision: whatever JavaScript answers a "policy" event with is a
// Decision the stack can act on, or an error (which denies); never a panic.
func FuzzDecision(f *testing.F) {
	for _, seed := range []string{
		`{"action":"deny"}`, `{"action":"accept"}`, `{"action":"http","middlewareId":9}`,
		`{"action":"dns","resolvers":[{"ip":"::1","port":0},{"ip":"1.1.1.1%x"}]}`,
		`{"action":"dns","resolvers":null}`, `{"action":1}`, `null`, `[]`, "",
	} {
		f.Add([]byte(seed))
	}
	f.Fuzz(func(t *testing.T, got []byte) {
		d, err := eventpolicy.New(&jsSide{answer: answer(string(got))}).Decide(context.Background(), flow)
		if err != nil {
			return
		}
		switch d.Action {
		case netpolicy.Deny, netpolicy.Accept:
		case netpolicy.AcceptHTTP:
			if (d.Middleware == nil) != (d.Release == nil) {
				t.Fatalf("middleware %v without its release, or the reverse", d.Middleware)
			}
		case netpolicy.AcceptDNS:
			for _, r := range d.Resolvers {
				if !r.IsValid() || r.Port() == 0 {
					t.Fatalf("resolver %v", r)
				}
			}
		default:
			t.Fatalf("action %v", d.Action)
		}
		if d.Action != netpolicy.AcceptDNS && len(d.Resolvers) > 0 {
			t.Fatalf("%v decision with resolvers", d.Action)
		}
	})
}

// FuzzVerdict: whatever JavaScript answers an "http" event with either
// refuses the request or yields headers that cannot break its framing
// upstream.
func FuzzVerdict(f *testing.F) {
	for _, seed := range []string{
		`{"headers":[["a","b"],["set-cookie","x"],["set-cookie","y"]]}`,
		`{"headers":[["a b","c"]]}`, `{"headers":[["a","\r\n"]]}`, `{"headers":[["a"]]}`,
		`{"headers":[["a","b","c"]]}`, `{"headers":null}`, `{}`, `null`, "",
	} {
		f.Add([]byte(seed))
	}
	f.Fuzz(func(t *testing.T, answer []byte) {
		js := &jsSide{answer: func(name string, _ []byte) ([]byte, error) {
			if name == protocol.EventPolicy {
				return []byte(`{"action":"http","middlewareId":1}`), nil
			}
			return answer, nil
		}}
		d, err := eventpolicy.New(js).Decide(context.Background(), flow)
		if err != nil {
			t.Fatal(err)
		}
		r := request()
		before := r.Header.Clone()
		if err := d.Middleware.Handle(context.Background(), r); err != nil {
			if !equalHeader(r.Header, before) {
				t.Fatalf("a refused request's headers changed to %v", r.Header)
			}
			return
		}
		n := 0
		for name, values := range r.Header {
			if !httpguts.ValidHeaderFieldName(name) || name != http.CanonicalHeaderKey(name) {
				t.Fatalf("header name %q", name)
			}
			for _, v := range values {
				n++
				if !httpguts.ValidHeaderFieldValue(v) {
					t.Fatalf("header %s value %q", name, v)
				}
			}
		}
		if n > 1000 {
			t.Fatalf("%d headers", n)
		}
	})
}
