// Package testutil holds what the Go tests of this module share: socket
// pairs, running a tool, and one policy for a missing tool. Tests never
// install anything: scripts/test.sh (need_pkgs) installs the system
// packages, and a test whose tool is missing skips naming it and the
// package that brings it.
package testutil

import (
	"context"
	"net"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/torkbot/sandbox/internal/sockpair"
)

// SocketPair returns the two ends of a connected unix stream socket pair
// (sockpair.New), closed when the test ends.
func SocketPair(t testing.TB) (a, b *os.File) {
	t.Helper()
	a, b, err := sockpair.New("socketpair-a", "socketpair-b")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { a.Close(); b.Close() })
	return a, b
}

// ConnPair is SocketPair as net.Conns.
func ConnPair(t testing.TB) (a, b net.Conn) {
	t.Helper()
	a, b, err := sockpair.Conns()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { a.Close(); b.Close() })
	return a, b
}

// Run runs a tool for at most a minute and returns its combined output,
// failing the test with that output when it does not succeed.
func Run(t testing.TB, name string, args ...string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	out, err := exec.CommandContext(ctx, name, args...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
	return string(out)
}

// Need skips the test unless tool is on PATH, naming the Debian package
// that brings it (which scripts/ installs).
func Need(t testing.TB, tool, pkg string) {
	t.Helper()
	if _, err := exec.LookPath(tool); err != nil {
		t.Skipf("%s is not installed (apt-get install %s; scripts/test.sh installs it)", tool, pkg)
	}
}
