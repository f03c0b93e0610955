// Package sockpair makes connected unix stream socket pairs: the one kind
// of link between this process and a VMM (channels, the NIC, the NBD disk),
// between sandbox-init and the kernel's nbd driver, and between the two
// sides of a test. One function, so every pair is made the same way.
package sockpair

import (
	"net"
	"os"
	"syscall"
)

// New returns the two ends of a connected unix stream socket pair, named
// for their jobs. Both are close-on-exec, so a child inherits an end only
// when it is passed explicitly (exec.Cmd.ExtraFiles), and non-blocking, so
// deadlines work on them; Fd() (which os/exec calls when it passes a file
// on) puts an end back in blocking mode, as a VMM or the kernel expects.
func New(nameA, nameB string) (a, b *os.File, err error) {
	// Portable close-on-exec (macOS has no SOCK_CLOEXEC): no fork may run
	// between the socketpair and the flags.
	syscall.ForkLock.RLock()
	fds, err := syscall.Socketpair(syscall.AF_UNIX, syscall.SOCK_STREAM, 0)
	if err == nil {
		syscall.CloseOnExec(fds[0])
		syscall.CloseOnExec(fds[1])
	}
	syscall.ForkLock.RUnlock()
	if err != nil {
		return nil, nil, os.NewSyscallError("socketpair", err)
	}
	for _, fd := range fds {
		if err := syscall.SetNonblock(fd, true); err != nil {
			syscall.Close(fds[0])
			syscall.Close(fds[1])
			return nil, nil, os.NewSyscallError("setnonblock", err)
		}
	}
	return os.NewFile(uintptr(fds[0]), nameA), os.NewFile(uintptr(fds[1]), nameB), nil
}

// Conns is New with both ends as net.Conns (*net.UnixConn), for code that
// speaks a protocol over the pair in this process.
func Conns() (a, b net.Conn, err error) {
	fa, fb, err := New("socketpair-a", "socketpair-b")
	if err != nil {
		return nil, nil, err
	}
	if a, err = FileConn(fa); err != nil {
		fb.Close()
		return nil, nil, err
	}
	if b, err = FileConn(fb); err != nil {
		a.Close()
		return nil, nil, err
	}
	return a, b, nil
}

// FileConn turns one end into a net.Conn; f is closed (the conn holds a
// duplicate).
func FileConn(f *os.File) (net.Conn, error) {
	defer f.Close()
	return net.FileConn(f)
}
