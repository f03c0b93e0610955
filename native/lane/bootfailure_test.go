package lane

import "testing"

func TestBootFailure(t *testing.T) {
	for _, tc := range []struct {
		console, reason string
		ok              bool
	}{
		{"[ 0.5] sandbox-init: starting\n", "", false},
		{"[ 0.5] sandbox-init: fatal: mount target /nope does not exist\n[ 0.6] reboot: Power down\n", "mount target /nope does not exist", true},
		// The last fatal line wins; a line cut off by the tail still gives its start.
		{"sandbox-init: fatal: first\nsandbox-init: fatal: second", "second", true},
	} {
		reason, ok := bootFailure(tc.console)
		if reason != tc.reason || ok != tc.ok {
			t.Errorf("bootFailure(%q) = %q, %v; want %q, %v", tc.console, reason, ok, tc.reason, tc.ok)
		}
	}
}
