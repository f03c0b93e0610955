package vmm

import (
	"sync"

	"github.com/torkbot/sandbox/guesttext"
)

// ConsoleTail keeps the last bytes a guest wrote to its console, so errors
// about a dead or stuck guest can show what it said last.
type ConsoleTail struct {
	mu   sync.Mutex
	buf  []byte
	size int
}

// NewConsoleTail keeps the last size bytes.
func NewConsoleTail(size int) *ConsoleTail { return &ConsoleTail{size: size} }

// Write records p. It never fails.
func (t *ConsoleTail) Write(p []byte) (int, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.buf = append(t.buf, p...)
	if over := len(t.buf) - t.size; over > 0 {
		t.buf = append(t.buf[:0], t.buf[over:]...)
	}
	return len(p), nil
}

// String returns the kept bytes, starting at a line boundary when one is
// kept, made printable (guesttext): the guest wrote them.
func (t *ConsoleTail) String() string {
	t.mu.Lock()
	defer t.mu.Unlock()
	b := t.buf
	if len(b) == t.size {
		for i, c := range b {
			if c == '\n' {
				b = b[i+1:]
				break
			}
		}
	}
	return guesttext.Printable(string(b))
}
