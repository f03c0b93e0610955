package httpproxy_test

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/x509"
	"encoding/pem"
	"net/netip"
	"testing"
	"time"

	"github.com/torkbot/sandbox/netpolicy/httpproxy"
)

func TestCA(t *testing.T) {
	ca, err := httpproxy.NewCA(httpproxy.CAOptions{CacheSize: 2})
	if err != nil {
		t.Fatal(err)
	}
	blk, _ := pem.Decode(ca.CertPEM())
	if blk == nil || blk.Type != "CERTIFICATE" {
		t.Fatalf("CertPEM: %q", ca.CertPEM())
	}
	root, err := x509.ParseCertificate(blk.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	if !root.IsCA || root.NotBefore.After(now.Add(-59*time.Minute)) || root.NotAfter.After(now.Add(8*24*time.Hour)) {
		t.Errorf("CA: IsCA=%v NotBefore=%v NotAfter=%v", root.IsCA, root.NotBefore, root.NotAfter)
	}
	if pk, ok := root.PublicKey.(*ecdsa.PublicKey); !ok || pk.Curve != elliptic.P256() {
		t.Errorf("CA key %T, want ECDSA P-256", root.PublicKey)
	}
	roots := x509.NewCertPool()
	roots.AddCert(root)

	a, err := ca.Leaf([]string{"Example.com."}, nil)
	if err != nil {
		t.Fatal(err)
	}
	// A guest clock 50 minutes behind still accepts the leaf.
	if _, err := a.Leaf.Verify(x509.VerifyOptions{DNSName: "example.com", Roots: roots, CurrentTime: now.Add(-50 * time.Minute)}); err != nil {
		t.Errorf("leaf: %v", err)
	}
	ip, err := ca.Leaf(nil, []netip.Addr{netip.MustParseAddr("192.0.2.1")})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := ip.Leaf.Verify(x509.VerifyOptions{DNSName: "192.0.2.1", Roots: roots}); err != nil {
		t.Errorf("IP leaf: %v", err)
	}
	if again, _ := ca.Leaf([]string{"example.com"}, nil); again != a {
		t.Error("leaf not cached")
	}
	// Cache of 2: a third name evicts the least recently used (the IP leaf).
	if _, err := ca.Leaf([]string{"other.test"}, nil); err != nil {
		t.Fatal(err)
	}
	if again, _ := ca.Leaf([]string{"example.com"}, nil); again != a {
		t.Error("recently used leaf evicted")
	}
	if again, _ := ca.Leaf(nil, []netip.Addr{netip.MustParseAddr("192.0.2.1")}); again == ip {
		t.Error("cache not bounded")
	}
	if _, err := ca.Leaf(nil, nil); err == nil {
		t.Error("leaf without names: no error")
	}
}
