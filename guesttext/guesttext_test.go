package guesttext_test

import (
	"testing"
	"unicode"
	"unicode/utf8"

	"github.com/torkbot/sandbox/guesttext"
)

func TestPrintable(t *testing.T) {
	for in, want := range map[string]string{
		"plain text\n\tindented\n":   "plain text\n\tindented\n",
		"caf\u00e9 \u4e2d\u6587":     "caf\u00e9 \u4e2d\u6587",
		"\x1b[31mred\x1b[0m":         `\x1b[31mred\x1b[0m`,
		"ok\rFAKE: all tests passed": `ok\x0dFAKE: all tests passed`,
		"nul\x00del\x7f":             `nul\x00del\x7f`,
		"bad \xff\xfe utf-8":         `bad \xff\xfe utf-8`,
		"c1 \u009b2J":                `c1 \u009b2J`,
		"bidi \u202eevil\u202c":      `bidi \u202eevil\u202c`,
		"truncated \xe4\xb8":         `truncated \xe4\xb8`,
	} {
		if got := guesttext.Printable(in); got != want {
			t.Errorf("Printable(%q) = %q, want %q", in, got, want)
		}
	}
}

func FuzzPrintable(f *testing.F) {
	f.Add("hello\n\x1b[0m\xff\u202e")
	f.Fuzz(func(t *testing.T, s string) {
		out := guesttext.Printable(s)
		if !utf8.ValidString(out) {
			t.Fatalf("Printable(%q) = %q: not valid UTF-8", s, out)
		}
		for _, r := range out {
			if (r < 0x20 && r != '\n' && r != '\t') || r == 0x7f || (r >= 0x80 && r < 0xa0) || unicode.Is(unicode.Bidi_Control, r) {
				t.Fatalf("Printable(%q) = %q: keeps %U", s, out, r)
			}
		}
	})
}
