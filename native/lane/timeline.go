package lane

import (
	"fmt"
	"strings"
)

// Timeline is the guest's boot on one line, for SANDBOX_DEBUG: each
// milestone sandbox-init reported in its hello (control.GuestInfo.Boot) on
// the guest's clock, which starts with the kernel, so "init" is what the
// kernel took and each later step what init did.
func (l *Lane) Timeline() string {
	var b strings.Builder
	b.WriteString("kernel 0 ms")
	for _, e := range l.Guest.Boot {
		fmt.Fprintf(&b, " → %s %.0f ms", e.Name, float64(e.At.Microseconds())/1e3)
	}
	return b.String()
}
