package httpproxy

import (
	"bufio"
	"fmt"
)

type kind int

const (
	kindUnknown kind = iota
	kindTLS
	kindHTTP1
)

// maxMethodLen bounds the method token the sniffer waits for.
const maxMethodLen = 24

// sniff classifies a guest connection by its first bytes without
// consuming them: a TLS handshake record (content type 22, major version
// 3) or an HTTP/1.x request line (a method of A-Z and '-' followed by a
// space). The HTTP/2 prior-knowledge preface ("PRI * HTTP/2.0") is not
// served. Anything else is kindUnknown with a non-nil error.
func sniff(br *bufio.Reader) (kind, error) {
	b, err := br.Peek(1)
	if err != nil {
		return kindUnknown, fmt.Errorf("cannot read first byte: %w", err)
	}
	if b[0] == 0x16 {
		b, err = br.Peek(3)
		if err != nil {
			return kindUnknown, fmt.Errorf("cannot read TLS record header: %w", err)
		}
		if b[1] != 3 {
			return kindUnknown, fmt.Errorf("TLS record with version %d.%d", b[1], b[2])
		}
		return kindTLS, nil
	}
scan:
	for n := 1; n <= maxMethodLen+1; n++ {
		b, err = br.Peek(n)
		if err != nil {
			return kindUnknown, fmt.Errorf("cannot read request line: %w", err)
		}
		c := b[n-1]
		switch {
		case c >= 'A' && c <= 'Z' || c == '-' && n > 1:
			continue
		case c == ' ' && n > 1:
			if string(b[:n-1]) == "PRI" {
				return kindUnknown, fmt.Errorf("HTTP/2 prior knowledge is not served")
			}
			return kindHTTP1, nil
		}
		break scan
	}
	return kindUnknown, fmt.Errorf("first bytes %q are neither TLS nor an HTTP/1 request line", b)
}
