package control

import (
	"errors"
	"fmt"
)

var (
	// ErrClosed is returned by calls on a Client after Close.
	ErrClosed = errors.New("control: client closed")
	// ErrSessionLost is returned by pending and later calls once the session
	// with the guest has ended without Close: the guest powered off, the VMM
	// exited, or the channel broke.
	ErrSessionLost = errors.New("control: session with the guest lost")
	// ErrNoHandshake is returned by Run and Shutdown before Handshake has
	// succeeded.
	ErrNoHandshake = errors.New("control: handshake not done")
	// ErrVersionMismatch is matched by a *VersionError.
	ErrVersionMismatch = errors.New("control: protocol version mismatch")
	// ErrProtocol is wrapped by errors reporting that the guest broke the
	// protocol on a stream: malformed or out-of-order messages, or a stream
	// that ended before its final message.
	ErrProtocol = errors.New("control: guest protocol violation")
)

// VersionError reports that host and guest speak different protocol
// versions. It matches ErrVersionMismatch.
type VersionError struct {
	Host, Guest int
}

func (e *VersionError) Error() string {
	return fmt.Sprintf("control: protocol version mismatch: host speaks %d, guest speaks %d (host and guest image are from different releases)", e.Host, e.Guest)
}

func (e *VersionError) Is(target error) bool { return target == ErrVersionMismatch }

// GuestError is a request the guest refused, with the guest's reason.
type GuestError struct {
	Op      string
	Message string
}

func (e *GuestError) Error() string {
	return fmt.Sprintf("control: guest refused %s: %s", e.Op, e.Message)
}
