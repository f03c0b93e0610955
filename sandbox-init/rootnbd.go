//go:build linux

package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"runtime"

	"golang.org/x/sys/unix"

	"github.com/torkbot/sandbox/internal/sockpair"
	"github.com/torkbot/sandbox/sandbox-init/channel"
	"github.com/torkbot/sandbox/sandbox-init/nbdattach"
)

// attachRootNBD attaches the root disk the host serves over NBD on channel
// name (sandbox.root=nbd:<channel>, used by the libkrun engine) and returns
// its device path. The device reconnects for as long as the guest runs.
func attachRootNBD(name string, log *console) (string, error) {
	dial := func() (*os.File, error) {
		f, err := channel.Open(name)
		if err != nil {
			return nil, err
		}
		return socketFor(f)
	}
	d, err := nbdattach.Attach(dial, "root", log.logf)
	if err != nil {
		return "", fmt.Errorf("attach the root disk over channel %q: %w", name, err)
	}
	go d.Keep(context.Background())
	log.logf("root disk %s attached over channel %q (%d bytes)", d.Path, name, d.Export.Size)
	return d.Path, nil
}

// socketFor returns f when it is a socket (a vsock channel). A
// virtio-serial port is a character device, which the nbd driver cannot
// use: then a socket pair stands in, with f's bytes copied to and from it.
// Only the QEMU-based test of this path needs that (vmm/krun
// TestRootOverNBDChannel); libkrun channels are vsock sockets.
func socketFor(f *os.File) (*os.File, error) {
	var st unix.Stat_t
	rc, err := f.SyscallConn()
	if err != nil {
		return nil, err
	}
	var serr error
	rc.Control(func(fd uintptr) { serr = unix.Fstat(int(fd), &st) })
	if serr != nil {
		f.Close()
		return nil, serr
	}
	if st.Mode&unix.S_IFMT == unix.S_IFSOCK {
		return f, nil
	}
	ours, theirs, err := sockpair.New("nbd relay", "nbd socket")
	if err != nil {
		f.Close()
		return nil, err
	}
	// The root's I/O now runs through this process. Go starts a command
	// with a vfork-style clone from a thread that keeps its P until the
	// child has exec'd, and the exec reads the binary from this very disk:
	// with a single P the copy goroutines could never run and the exec
	// would wait forever (seen with one vCPU). A second P keeps them
	// running; forks are serialised, so one is enough.
	if runtime.GOMAXPROCS(0) < 2 {
		runtime.GOMAXPROCS(2)
	}
	// Plain reads and writes: io.Copy between two Files would try
	// splice(2), which a virtio-serial port does not take part in reliably
	// (the guest stalled with its replies unread).
	go func() {
		io.CopyBuffer(struct{ io.Writer }{ours}, struct{ io.Reader }{f}, make([]byte, 64<<10))
		ours.Close()
	}()
	go func() {
		io.CopyBuffer(struct{ io.Writer }{f}, struct{ io.Reader }{ours}, make([]byte, 64<<10))
		f.Close()
	}()
	return theirs, nil
}
