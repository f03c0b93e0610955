package vmm_test

import (
	"strings"
	"testing"

	"github.com/torkbot/sandbox/vmm"
)

func TestConsoleTail(t *testing.T) {
	for _, tc := range []struct {
		name   string
		writes []string
		want   string
	}{
		{"empty", nil, ""},
		{"short", []string{"hello\n", "world\n"}, "hello\nworld\n"},
		{"exactly full keeps everything", []string{"0123456789abcdef"}, "0123456789abcdef"},
		// Once bytes were dropped, the tail starts at a line boundary.
		{"overflow starts at a line", []string{"first line\n", "second\n", "third\n"}, "second\nthird\n"},
		{"overflow in one write", []string{strings.Repeat("x", 40) + "\nend\n"}, "end\n"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tail := vmm.NewConsoleTail(16)
			for _, w := range tc.writes {
				if n, err := tail.Write([]byte(w)); n != len(w) || err != nil {
					t.Fatalf("Write = %d, %v", n, err)
				}
			}
			if got := tail.String(); got != tc.want {
				t.Errorf("String() = %q, want %q", got, tc.want)
			}
		})
	}
}

func TestConsoleTailIsPrintable(t *testing.T) {
	tail := vmm.NewConsoleTail(64)
	tail.Write([]byte("panic\x1b]0;title\x07\n"))
	if got := tail.String(); got != `panic\x1b]0;title\x07`+"\n" {
		t.Errorf("ConsoleTail.String() = %q: the guest's bytes must come out escaped", got)
	}
}
