package channel

import (
	"errors"
	"fmt"
	"os"
	"time"

	"golang.org/x/sys/unix"
)

// hostCID is the host's vsock address as the guest sees it.
const hostCID = unix.VMADDR_CID_HOST

// openVsock connects to port on cid, retrying for up to timeout while the
// transport or the host end is not there yet (the vsock driver probes, or
// the VMM's listener comes up, a little after init starts).
func openVsock(cid, port uint32, timeout time.Duration) (*os.File, error) {
	deadline := time.Now().Add(timeout)
	for {
		f, err := dialVsock(cid, port)
		if err == nil {
			return f, nil
		}
		if !retryable(err) || time.Now().After(deadline) {
			return nil, fmt.Errorf("vsock %d:%d: %w", cid, port, err)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func retryable(err error) bool {
	return errors.Is(err, unix.ECONNRESET) || errors.Is(err, unix.ECONNREFUSED) ||
		errors.Is(err, unix.ENODEV) || errors.Is(err, unix.ETIMEDOUT) ||
		errors.Is(err, unix.EAFNOSUPPORT) || errors.Is(err, unix.EINTR)
}

func dialVsock(cid, port uint32) (*os.File, error) {
	fd, err := unix.Socket(unix.AF_VSOCK, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, err
	}
	// A blocking connect: vsock connects are quick, and bounded by the
	// transport's own connect timeout.
	if err := unix.Connect(fd, &unix.SockaddrVM{CID: cid, Port: port}); err != nil {
		unix.Close(fd)
		return nil, err
	}
	// Non-blocking from here, so the File uses the runtime poller and a
	// Close unblocks a pending Read.
	if err := unix.SetNonblock(fd, true); err != nil {
		unix.Close(fd)
		return nil, err
	}
	return os.NewFile(uintptr(fd), fmt.Sprintf("vsock:%d:%d", cid, port)), nil
}
