// Package netns runs code inside another network namespace. The netpolicy
// tests and the network benchmark keep their origins there, one veth hop
// from the netpolicy Stack, because the Stack refuses its own host's
// addresses: an origin on the test's own loopback would be the host's.
package netns

import (
	"fmt"
	"os"
	"runtime"

	"golang.org/x/sys/unix"
)

// Do runs f on an OS thread that has entered the network namespace at path
// (such as /run/netns/NAME). Sockets f opens belong to that namespace for
// their whole life, whatever thread uses them later.
func Do(path string, f func()) error {
	runtime.LockOSThread()
	self, err := os.Open(fmt.Sprintf("/proc/self/task/%d/ns/net", unix.Gettid()))
	if err != nil {
		runtime.UnlockOSThread()
		return fmt.Errorf("netns: cannot open this thread's namespace: %w", err)
	}
	defer self.Close()
	target, err := os.Open(path)
	if err != nil {
		runtime.UnlockOSThread()
		return fmt.Errorf("netns: %w", err)
	}
	defer target.Close()
	if err := unix.Setns(int(target.Fd()), unix.CLONE_NEWNET); err != nil {
		runtime.UnlockOSThread()
		return fmt.Errorf("netns: cannot enter %s: %w", path, err)
	}
	f()
	if err := unix.Setns(int(self.Fd()), unix.CLONE_NEWNET); err != nil {
		// The thread stays locked, so the runtime ends it with the
		// calling goroutine instead of reusing it in the wrong namespace.
		return fmt.Errorf("netns: cannot leave %s: %w", path, err)
	}
	runtime.UnlockOSThread()
	return nil
}
