package httpproxy

import (
	"container/list"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"net/netip"
	"sort"
	"strings"
	"sync"
	"time"
)

const (
	// caBackdate is how far NotBefore of the CA and of every leaf lies in
	// the past, so that a guest whose clock lags the host still accepts
	// them.
	caBackdate = time.Hour
	// defaultCALifetime is the CA's validity after its creation. The CA is
	// per boot; a sandbox that outlives it gets leaves that fail to verify.
	defaultCALifetime = 7 * 24 * time.Hour
	// leafLifetime is a leaf's validity after it was minted (capped by the
	// CA's NotAfter). Cached leaves are re-minted leafRenewBefore their end.
	leafLifetime    = 24 * time.Hour
	leafRenewBefore = time.Hour
	// defaultLeafCacheSize bounds the number of cached leaves (LRU).
	defaultLeafCacheSize = 1024
)

// CAOptions tunes NewCA. The zero value is the default.
type CAOptions struct {
	// Lifetime is the CA's validity from now; 0 means 7 days.
	Lifetime time.Duration
	// CacheSize bounds the number of leaf certificates kept; 0 means 1024.
	CacheSize int
}

// CA is a per-boot interception certificate authority: an ECDSA P-256 key
// that lives only in this process (there is no method that returns it)
// and a self-signed certificate whose validity starts an hour in the past.
// It mints leaf certificates on demand and keeps the most recently used
// ones. A CA is safe for concurrent use.
type CA struct {
	cert    *x509.Certificate
	certPEM []byte
	key     *ecdsa.PrivateKey
	size    int

	mu    sync.Mutex
	lru   *list.List // of *leafEntry, most recent first
	byKey map[string]*list.Element
}

type leafEntry struct {
	key  string
	cert *tls.Certificate
}

// NewCA generates a fresh CA.
func NewCA(opts CAOptions) (*CA, error) {
	if opts.Lifetime <= 0 {
		opts.Lifetime = defaultCALifetime
	}
	if opts.CacheSize <= 0 {
		opts.CacheSize = defaultLeafCacheSize
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("httpproxy: cannot generate CA key: %w", err)
	}
	serial, err := randomSerial()
	if err != nil {
		return nil, err
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber: serial,
		Subject: pkix.Name{
			Organization: []string{"torkbot sandbox"},
			CommonName:   "torkbot sandbox interception CA " + serial.Text(16)[:8],
		},
		NotBefore:             now.Add(-caBackdate),
		NotAfter:              now.Add(opts.Lifetime),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign | x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true,
		IsCA:                  true,
		MaxPathLen:            0,
		MaxPathLenZero:        true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return nil, fmt.Errorf("httpproxy: cannot create CA certificate: %w", err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, fmt.Errorf("httpproxy: cannot parse CA certificate: %w", err)
	}
	return &CA{
		cert:    cert,
		certPEM: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}),
		key:     key,
		size:    opts.CacheSize,
		lru:     list.New(),
		byKey:   make(map[string]*list.Element),
	}, nil
}

// CertPEM returns the CA certificate, PEM-encoded, for the guest's trust
// store. The caller may keep the slice but must not modify it.
func (ca *CA) CertPEM() []byte { return ca.certPEM }

// Certificate returns the parsed CA certificate. The caller must not
// modify it.
func (ca *CA) Certificate() *x509.Certificate { return ca.cert }

// Leaf returns a certificate for the given DNS names and IP addresses
// (at least one of either), minting it on first use. Names are compared
// case-insensitively and without a trailing dot.
func (ca *CA) Leaf(dnsNames []string, ips []netip.Addr) (*tls.Certificate, error) {
	names := make([]string, 0, len(dnsNames))
	for _, n := range dnsNames {
		if n = normalizeHost(n); n != "" {
			names = append(names, n)
		}
	}
	if len(names) == 0 && len(ips) == 0 {
		return nil, fmt.Errorf("httpproxy: leaf certificate needs a name or an address")
	}
	sort.Strings(names)
	parts := append([]string(nil), names...)
	for _, ip := range ips {
		parts = append(parts, ip.Unmap().String())
	}
	key := strings.Join(parts, ",")
	now := time.Now()

	ca.mu.Lock()
	if el, ok := ca.byKey[key]; ok {
		e := el.Value.(*leafEntry)
		if now.Add(leafRenewBefore).Before(e.cert.Leaf.NotAfter) {
			ca.lru.MoveToFront(el)
			ca.mu.Unlock()
			return e.cert, nil
		}
		ca.lru.Remove(el)
		delete(ca.byKey, key)
	}
	ca.mu.Unlock()

	// Minting happens unlocked; two racing handshakes for the same name
	// both mint, and the later one wins the cache slot.
	cert, err := ca.mint(names, ips, now)
	if err != nil {
		return nil, err
	}
	ca.mu.Lock()
	defer ca.mu.Unlock()
	if el, ok := ca.byKey[key]; ok {
		ca.lru.Remove(el)
	}
	ca.byKey[key] = ca.lru.PushFront(&leafEntry{key: key, cert: cert})
	for ca.lru.Len() > ca.size {
		old := ca.lru.Remove(ca.lru.Back()).(*leafEntry)
		delete(ca.byKey, old.key)
	}
	return cert, nil
}

func (ca *CA) mint(names []string, ips []netip.Addr, now time.Time) (*tls.Certificate, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("httpproxy: cannot generate leaf key: %w", err)
	}
	serial, err := randomSerial()
	if err != nil {
		return nil, err
	}
	notAfter := now.Add(leafLifetime)
	if notAfter.After(ca.cert.NotAfter) {
		notAfter = ca.cert.NotAfter
	}
	tmpl := &x509.Certificate{
		SerialNumber: serial,
		NotBefore:    now.Add(-caBackdate),
		NotAfter:     notAfter,
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		DNSNames:     names,
	}
	if len(names) > 0 {
		tmpl.Subject.CommonName = names[0]
	}
	for _, ip := range ips {
		tmpl.IPAddresses = append(tmpl.IPAddresses, ip.Unmap().AsSlice())
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, &key.PublicKey, ca.key)
	if err != nil {
		return nil, fmt.Errorf("httpproxy: cannot mint leaf certificate: %w", err)
	}
	leaf, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, fmt.Errorf("httpproxy: cannot parse leaf certificate: %w", err)
	}
	return &tls.Certificate{
		Certificate: [][]byte{der, ca.cert.Raw},
		PrivateKey:  key,
		Leaf:        leaf,
	}, nil
}

func randomSerial() (*big.Int, error) {
	s, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		return nil, fmt.Errorf("httpproxy: cannot generate serial: %w", err)
	}
	return s.Add(s, big.NewInt(1)), nil
}

// normalizeHost lowercases a host name and strips one trailing dot.
func normalizeHost(h string) string {
	return strings.TrimSuffix(strings.ToLower(h), ".")
}
