package truststore

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"encoding/pem"
	"fmt"
	"math/big"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/torkbot/sandbox/internal/testutil"
)

// newCert makes a certificate for subject, signed by parent (self-signed
// when parent is nil).
func newCert(t *testing.T, subject pkix.Name, isCA bool, parent *x509.Certificate, parentKey *ecdsa.PrivateKey) (*x509.Certificate, *ecdsa.PrivateKey) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(time.Now().UnixNano()),
		Subject:               subject,
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(time.Hour),
		BasicConstraintsValid: true,
		IsCA:                  isCA,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature,
		DNSNames:              []string{"origin.test"},
	}
	if parent == nil {
		parent, parentKey = tmpl, key
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, parent, &key.PublicKey, parentKey)
	if err != nil {
		t.Fatal(err)
	}
	c, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return c, key
}

// newRawSubjectCert makes a self-signed certificate with a subject Go's
// pkix.Name cannot express.
func newRawSubjectCert(t *testing.T, rawSubject []byte) *x509.Certificate {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), RawSubject: rawSubject, NotBefore: time.Now(), NotAfter: time.Now().Add(time.Hour)}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	c, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func writePEM(t *testing.T, path string, c *x509.Certificate) {
	t.Helper()
	if err := os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.Raw}), 0o644); err != nil {
		t.Fatal(err)
	}
}

func TestSubjectHashMatchesOpenSSL(t *testing.T) {
	testutil.Need(t, "openssl", "openssl") // the reference for subject hashes
	bmp := asn1.RawValue{Class: asn1.ClassUniversal, Tag: asn1.TagBMPString, Bytes: []byte{0, 'B', 0, 'm', 0, 'P', 0, ' ', 0, ' ', 0, 'X'}}
	bmpDER, _ := asn1.Marshal(bmp)
	subjects := []pkix.Name{
		{CommonName: "torkbot sandbox interception CA 1a2b3c4d", Organization: []string{"torkbot sandbox"}},
		{CommonName: "  Mixed   CASE\tName  ", Country: []string{"DE"}, Locality: []string{"Zürich"}},
		{ExtraNames: []pkix.AttributeTypeAndValue{{Type: asn1.ObjectIdentifier{2, 5, 4, 3}, Value: asn1.RawValue{FullBytes: bmpDER}}}},
		{},
	}
	// A multi-valued RDN, whose SET members DER orders by their encodings:
	// as sent the OU sorts first (shorter), canonicalised the CN does.
	multi, err := asn1.Marshal(pkix.RDNSequence{{
		{Type: asn1.ObjectIdentifier{2, 5, 4, 11}, Value: "ZZ"},
		{Type: asn1.ObjectIdentifier{2, 5, 4, 3}, Value: "      A"},
	}})
	if err != nil {
		t.Fatal(err)
	}

	dir := t.TempDir()
	for i := range len(subjects) + 1 {
		var c *x509.Certificate
		if i < len(subjects) {
			c, _ = newCert(t, subjects[i], true, nil, nil)
		} else {
			c = newRawSubjectCert(t, multi)
		}
		path := filepath.Join(dir, fmt.Sprintf("%d.pem", i))
		writePEM(t, path, c)
		out, err := exec.Command("openssl", "x509", "-noout", "-subject_hash", "-in", path).CombinedOutput()
		if err != nil {
			t.Fatalf("openssl: %v: %s", err, out)
		}
		got, err := SubjectHash(c.RawSubject)
		if err != nil {
			t.Fatal(err)
		}
		if want := strings.TrimSpace(string(out)); fmt.Sprintf("%08x", got) != want {
			t.Errorf("subject %q: hash %08x, openssl says %s", c.Subject, got, want)
		}
	}
}

func TestAddIsTrustedByOpenSSL(t *testing.T) {
	testutil.Need(t, "openssl", "openssl") // the reference for subject hashes
	store := t.TempDir()
	other, _ := newCert(t, pkix.Name{CommonName: "Some Root"}, true, nil, nil)
	writePEM(t, filepath.Join(store, Bundle), other)
	ca, caKey := newCert(t, pkix.Name{CommonName: "sandbox CA"}, true, nil, nil)
	leaf, _ := newCert(t, pkix.Name{CommonName: "origin.test"}, false, ca, caKey)
	leafPath := filepath.Join(t.TempDir(), "leaf.pem")
	writePEM(t, leafPath, leaf)

	verify := func(how ...string) error {
		args := append([]string{"verify"}, how...)
		out, err := exec.Command("openssl", append(args, leafPath)...).CombinedOutput()
		if err != nil {
			return fmt.Errorf("%v: %s", err, out)
		}
		return nil
	}
	if verify("-CAfile", filepath.Join(store, Bundle)) == nil {
		t.Fatal("leaf verified before the CA was added")
	}
	if err := Add(store, "sandbox", []*x509.Certificate{ca}); err != nil {
		t.Fatal(err)
	}
	if err := verify("-CAfile", filepath.Join(store, Bundle)); err != nil {
		t.Errorf("bundle: %v", err)
	}
	if err := verify("-no-CAfile", "-CApath", store); err != nil {
		t.Errorf("hash links: %v", err)
	}
	bundle, _ := os.ReadFile(filepath.Join(store, Bundle))
	if certs, err := ParsePEM(string(bundle)); err != nil || len(certs) != 2 || !certs[0].Equal(other) {
		t.Errorf("bundle holds %d certificates (%v), want the old one first, then the CA", len(certs), err)
	}
}

func TestAddNeedsABundle(t *testing.T) {
	ca, _ := newCert(t, pkix.Name{CommonName: "sandbox CA"}, true, nil, nil)
	if err := Add(t.TempDir(), "sandbox", []*x509.Certificate{ca}); err == nil {
		t.Fatal("Add succeeded in a directory without a bundle")
	}
}

func TestParsePEM(t *testing.T) {
	ca, _ := newCert(t, pkix.Name{CommonName: "sandbox CA"}, true, nil, nil)
	good := string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: ca.Raw}))
	if certs, err := ParsePEM(good); err != nil || len(certs) != 1 {
		t.Fatalf("ParsePEM = %d, %v", len(certs), err)
	}
	for _, bad := range []string{
		"",
		"garbage",
		good + "trailing garbage",
		string(pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: []byte{1}})),
		string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: []byte{1, 2, 3}})),
	} {
		if _, err := ParsePEM(bad); err == nil {
			t.Errorf("ParsePEM(%q) succeeded", bad)
		}
	}
}
