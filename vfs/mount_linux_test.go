package vfs_test

import (
	"context"
	"fmt"
	"os"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/torkbot/sandbox/internal/testutil"
	"github.com/torkbot/sandbox/sandbox-init/fuserelay"
	"github.com/torkbot/sandbox/vfs"
)

// mount mounts fsys on a new directory through a real kernel FUSE mount,
// carried the way a guest carries it: /dev/fuse ⇄ fuserelay ⇄ a stream
// socket ⇄ vfs.Serve. It unmounts when the test ends (lazily if the mount
// is busy) and fails the test if the server does not stop. stopServer ends
// the server early.
//
// The test process must not open files on the mount (stat and readlink
// are fine): Go adds every file it opens to its epoll set, the kernel then
// asks the FUSE server (FUSE_POLL) while holding the epoll lock, and the
// server, in the same process, needs that epoll to read the request.
// Tools run as child processes instead. A guest has no such loop: its
// server runs on the host.
func mount(t *testing.T, fsys vfs.FileSystem, readOnly bool, opts vfs.Options) (dir string, stopServer func()) {
	t.Helper()
	fd, err := unix.Open("/dev/fuse", unix.O_RDWR|unix.O_CLOEXEC|unix.O_NONBLOCK, 0)
	if err != nil {
		t.Skipf("no /dev/fuse (needs root and the fuse module): %v", err)
	}
	dir = t.TempDir()
	flags := uintptr(unix.MS_NOSUID | unix.MS_NODEV)
	if readOnly {
		flags |= unix.MS_RDONLY
	}
	data := fmt.Sprintf("fd=%d,rootmode=40000,user_id=0,group_id=0,allow_other,default_permissions", fd)
	if err := unix.Mount("vfstest", dir, "fuse", flags, data); err != nil {
		unix.Close(fd)
		t.Skipf("cannot mount FUSE: %v", err)
	}
	dev := os.NewFile(uintptr(fd), "/dev/fuse")
	guest, host := testutil.SocketPair(t)
	relayDone, serveDone := make(chan error, 1), make(chan error, 1)
	go func() { relayDone <- fuserelay.Relay(dev, guest) }()
	ctx, cancel := context.WithCancel(context.Background())
	if opts.Log == nil {
		opts.Log = os.Stderr
	}
	go func() { serveDone <- vfs.Serve(ctx, host, fsys, opts) }()
	t.Cleanup(func() {
		if err := unix.Unmount(dir, 0); err != nil {
			t.Logf("unmount %s: %v; detaching it", dir, err)
			unix.Unmount(dir, unix.MNT_DETACH)
		}
		cancel()
		for name, done := range map[string]chan error{"relay": relayDone, "server": serveDone} {
			select {
			case err := <-done:
				if err != nil && err != context.Canceled {
					t.Logf("%s: %v", name, err)
				}
			case <-time.After(10 * time.Second):
				t.Errorf("%s did not stop", name)
			}
		}
	})
	return dir, cancel
}

// run runs a command in dir with a timeout, failing the test with its
// output.
//
// The command changes to dir itself (env -C), not through cmd.Dir: the
// chdir between fork and exec asks the FUSE server when the kernel's
// attributes have expired, and under -race the forking thread holds the
// race runtime's locks until the exec, which the server then waits for.
func run(t *testing.T, dir string, name string, args ...string) string {
	t.Helper()
	return testutil.Run(t, "env", append([]string{"-C", dir, name}, args...)...)
}
