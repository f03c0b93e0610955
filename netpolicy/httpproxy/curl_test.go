package httpproxy_test

import (
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// TestCurl drives the proxy with the real curl as the guest: it trusts
// only the proxy's CA and reaches the harness through --resolve, so every
// byte stays on loopback.
func TestCurl(t *testing.T) {
	curl, err := exec.LookPath("curl")
	if err != nil {
		t.Skip("curl is not installed here (scripts/test.sh installs it)")
	}
	o := newOrigin(t, true, true, nil)
	h := newHarness(t, o.addr(), "example.com", injector(nil), originRootsPEM(o))
	caFile := filepath.Join(t.TempDir(), "proxy-ca.pem")
	if err := os.WriteFile(caFile, h.ca.CertPEM(), 0o600); err != nil {
		t.Fatal(err)
	}
	_, port, err := net.SplitHostPort(h.ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		flag, wantProto string
	}{
		{"--http2", "HTTP/2"},
		{"--http1.1", "HTTP/1.1"},
	} {
		t.Run(tc.flag, func(t *testing.T) {
			before := o.count()
			cmd := exec.Command(curl, "-sS", "-v", tc.flag,
				"--noproxy", "*",
				"--cacert", caFile,
				"--resolve", fmt.Sprintf("example.com:%s:127.0.0.1", port),
				"-H", "X-Guest: 1",
				fmt.Sprintf("https://example.com:%s/curl", port))
			cmd.Env = []string{"PATH=" + os.Getenv("PATH")}
			out, err := cmd.CombinedOutput()
			if err != nil {
				t.Fatalf("curl: %v\n%s", err, out)
			}
			s := string(out)
			if !strings.Contains(s, "hello GET /curl") || !strings.Contains(s, "< "+tc.wantProto+" 200") {
				t.Fatalf("unexpected curl output:\n%s", s)
			}
			if strings.Contains(s, "s3cr3t") {
				t.Errorf("curl's verbose output shows the injected secret:\n%s", s)
			}
			if o.count() != before+1 {
				t.Fatalf("origin got %d requests, want %d", o.count(), before+1)
			}
			if got := o.last().Header.Get("Authorization"); got != secret {
				t.Errorf("origin saw Authorization %q", got)
			}
			if got := o.last().Header.Get("X-Guest"); got != "1" {
				t.Errorf("origin saw X-Guest %q", got)
			}
		})
	}
}
