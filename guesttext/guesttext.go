// Package guesttext makes text that came from the guest (console output,
// reasons and messages it sent, file names) safe to put in a host error or
// log line. The guest is hostile; the person reading the log is not.
package guesttext

import (
	"fmt"
	"strings"
	"unicode"
	"unicode/utf8"
)

// Printable returns guest text (console output, a reason init gave) made
// safe to put in a host error or log line: newlines and tabs stay, and
// everything that could act on the terminal or the log that shows it is
// written as an escape instead, so a hostile guest can neither forge log
// lines (\r), drive the terminal (ESC, C1 controls), hide text (bidi
// overrides) nor smuggle invalid UTF-8 into JSON-encoded errors:
//   - a \r before \n is dropped (a serial console ends its lines so),
//   - invalid UTF-8 bytes as \xNN,
//   - C0 controls other than \n and \t, and DEL, as \xNN,
//   - C1 controls and bidi controls as \uNNNN.
func Printable(s string) string {
	var b strings.Builder
	b.Grow(len(s))
	for i := 0; i < len(s); {
		r, size := utf8.DecodeRuneInString(s[i:])
		switch {
		case r == utf8.RuneError && size == 1:
			fmt.Fprintf(&b, `\x%02x`, s[i])
		case r == '\r' && strings.HasPrefix(s[i+1:], "\n"):
			// dropped: the \n that follows ends the line
		case r == '\n' || r == '\t':
			b.WriteRune(r)
		case r < 0x20 || r == 0x7f:
			fmt.Fprintf(&b, `\x%02x`, r)
		case (r >= 0x80 && r < 0xa0) || unicode.Is(unicode.Bidi_Control, r):
			fmt.Fprintf(&b, `\u%04x`, r)
		default:
			b.WriteString(s[i : i+size])
		}
		i += size
	}
	return b.String()
}
