// Package truststore adds certificates to a Debian-style system trust store:
// a directory of PEM files reachable through OpenSSL subject-hash links
// (CApath) and one concatenated bundle (CAfile), the layout
// update-ca-certificates maintains in /etc/ssl/certs on Debian, Ubuntu and
// Alpine. OpenSSL, GnuTLS (git's libcurl on Debian), Python, Go and curl
// all read one of the two.
//
// update-ca-certificates itself is not run: it rebuilds the bundle from
// every certificate with shell loops, which takes over 20 s under TCG for
// the stock 146 certificates even with nothing to add. Adding one
// certificate to both views is the same end state for that certificate and
// takes milliseconds.
package truststore

import (
	"bytes"
	"crypto/sha1"
	"crypto/x509"
	"encoding/asn1"
	"encoding/binary"
	"encoding/pem"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"unicode/utf16"
	"unicode/utf8"
)

// Bundle is the file name of the concatenated bundle in the store
// directory.
const Bundle = "ca-certificates.crt"

// ParsePEM decodes PEM certificates; anything else in the input is an error.
func ParsePEM(pemText string) ([]*x509.Certificate, error) {
	rest := []byte(pemText)
	var certs []*x509.Certificate
	for {
		var block *pem.Block
		block, rest = pem.Decode(rest)
		if block == nil {
			break
		}
		if block.Type != "CERTIFICATE" {
			return nil, fmt.Errorf("PEM block %q is not a certificate", block.Type)
		}
		c, err := x509.ParseCertificate(block.Bytes)
		if err != nil {
			return nil, err
		}
		certs = append(certs, c)
	}
	if len(bytes.TrimSpace(rest)) > 0 || len(certs) == 0 {
		return nil, errors.New("not a PEM certificate")
	}
	return certs, nil
}

// Add writes each certificate into the store at dir as <name>-<i>.pem, links
// it as <subject hash>.<n>, and appends it to the bundle, which is replaced
// by rename so that a reader never sees half of it. The bundle must exist:
// a directory without one is not a store this package knows.
func Add(dir, name string, certs []*x509.Certificate) error {
	bundlePath := filepath.Join(dir, Bundle)
	bundle, err := os.ReadFile(bundlePath)
	if err != nil {
		return fmt.Errorf("read the CA bundle: %w", err)
	}
	for i, c := range certs {
		p := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.Raw})
		file := fmt.Sprintf("%s-%d.pem", name, i)
		if err := os.WriteFile(filepath.Join(dir, file), p, 0o644); err != nil {
			return err
		}
		hash, err := SubjectHash(c.RawSubject)
		if err != nil {
			return fmt.Errorf("certificate %q: %w", c.Subject, err)
		}
		if err := link(dir, hash, file); err != nil {
			return err
		}
		if len(bundle) > 0 && bundle[len(bundle)-1] != '\n' {
			bundle = append(bundle, '\n')
		}
		bundle = append(bundle, p...)
	}
	tmp := bundlePath + ".sandbox-tmp"
	if err := os.WriteFile(tmp, bundle, 0o644); err != nil {
		return err
	}
	return os.Rename(tmp, bundlePath)
}

// link makes <hash>.<n> point at file, with n the first free suffix (other
// certificates may share the subject hash).
func link(dir string, hash uint32, file string) error {
	for n := 0; n < 100; n++ {
		err := os.Symlink(file, filepath.Join(dir, fmt.Sprintf("%08x.%d", hash, n)))
		if !errors.Is(err, os.ErrExist) {
			return err
		}
	}
	return fmt.Errorf("no free hash link for %08x", hash)
}

// SubjectHash is OpenSSL's X509_NAME_hash of a DER-encoded name (what
// `openssl x509 -subject_hash` prints): the first four bytes, little-endian,
// of the SHA-1 of the name's canonical encoding. The canonical encoding is
// each RDN's SET re-encoded with every string value converted to a
// UTF8String that is trimmed, has runs of white space collapsed to one
// space and ASCII letters lowered, the SETs concatenated without the outer
// SEQUENCE.
func SubjectHash(rawName []byte) (uint32, error) {
	var rdns []asn1.RawValue
	if rest, err := asn1.Unmarshal(rawName, &rdns); err != nil || len(rest) > 0 {
		return 0, fmt.Errorf("malformed name: %v", err)
	}
	var canon []byte
	for _, rdn := range rdns {
		if rdn.Class != asn1.ClassUniversal || rdn.Tag != asn1.TagSet {
			return 0, errors.New("malformed name: RDN is not a SET")
		}
		var entries [][]byte
		for rest := rdn.Bytes; len(rest) > 0; {
			var atv struct {
				Type  asn1.ObjectIdentifier
				Value asn1.RawValue
			}
			var err error
			if rest, err = asn1.Unmarshal(rest, &atv); err != nil {
				return 0, fmt.Errorf("malformed name: %v", err)
			}
			if s, ok := canonicalString(atv.Value); ok {
				atv.Value = asn1.RawValue{Class: asn1.ClassUniversal, Tag: asn1.TagUTF8String, Bytes: []byte(s)}
			}
			der, err := asn1.Marshal(atv)
			if err != nil {
				return 0, err
			}
			entries = append(entries, der)
		}
		// DER orders the members of a SET OF by their encodings.
		slices.SortFunc(entries, bytes.Compare)
		set, err := asn1.Marshal(asn1.RawValue{Class: asn1.ClassUniversal, Tag: asn1.TagSet, IsCompound: true, Bytes: bytes.Join(entries, nil)})
		if err != nil {
			return 0, err
		}
		canon = append(canon, set...)
	}
	sum := sha1.Sum(canon)
	return binary.LittleEndian.Uint32(sum[:4]), nil
}

// canonicalString returns the canonical form of a string value, or false
// for a value OpenSSL keeps as it is (not one of its canonicalised string
// types, or not decodable).
func canonicalString(v asn1.RawValue) (string, bool) {
	if v.Class != asn1.ClassUniversal {
		return "", false
	}
	var s string
	switch v.Tag {
	case asn1.TagUTF8String, asn1.TagPrintableString, asn1.TagIA5String, 26 /* VisibleString */ :
		if !utf8.Valid(v.Bytes) {
			return "", false
		}
		s = string(v.Bytes)
	case asn1.TagT61String: // one byte per character, as OpenSSL reads it
		r := make([]rune, len(v.Bytes))
		for i, b := range v.Bytes {
			r[i] = rune(b)
		}
		s = string(r)
	case asn1.TagBMPString:
		if len(v.Bytes)%2 != 0 {
			return "", false
		}
		u := make([]uint16, len(v.Bytes)/2)
		for i := range u {
			u[i] = binary.BigEndian.Uint16(v.Bytes[2*i:])
		}
		s = string(utf16.Decode(u))
	case 28: // UniversalString
		if len(v.Bytes)%4 != 0 {
			return "", false
		}
		r := make([]rune, len(v.Bytes)/4)
		for i := range r {
			r[i] = rune(binary.BigEndian.Uint32(v.Bytes[4*i:]))
		}
		s = string(r)
	default:
		return "", false
	}
	// OpenSSL's isspace: space, \t, \n, \v, \f, \r.
	isSpace := func(r rune) bool { return r == ' ' || (r >= '\t' && r <= '\r') }
	fields := strings.FieldsFunc(s, isSpace)
	s = strings.Join(fields, " ")
	return strings.Map(func(r rune) rune {
		if r >= 'A' && r <= 'Z' {
			return r + ('a' - 'A')
		}
		return r
	}, s), true
}
