package control

import (
	"encoding/binary"
	"fmt"
	"io"
	"sync/atomic"
)

// The host does not hand the guest's bytes to yamux as they come: guard
// reads them first, one yamux frame header at a time, and keeps from yamux
// what would let a hostile guest make the host spend without bound.
//
// hashicorp/yamux v0.1.2 answers every PING carrying SYN from a new
// goroutine that waits up to ConnectionWriteTimeout (30 s) to queue its
// reply. A guest that sends pings and never reads grows the host by one
// goroutine (and its stack) per 12 bytes: 2.4 MB of pings made 200 000
// goroutines and 400 MiB of stack. Keep-alive is off on both sides (see
// yamuxConfig) and the host never calls Ping, so a ping from the guest asks
// nothing the host needs to answer: guard drops every PING frame. A SYN is
// the guest opening a stream, which the host never accepts (the host opens
// every stream); yamux would keep up to AcceptBacklog (256) of them, each
// buffering up to a 256 KiB window, so guard ends the session instead.
//
// Why a filter rather than the alternatives: patching or vendoring yamux
// means carrying a fork of a session layer for a six-line change, and
// moving to another mux changes the guest side and the wire format
// (PROTOCOL.md) for a bug that only the host-facing direction has. The
// filter is one small parser (fuzzed in FuzzGuard) that leaves yamux, the
// guest and the wire as they are; it has to parse only the 12-byte header
// and skip DATA payloads, whose length yamux then checks against the
// stream's window.

// yamux's frame header (its spec.md): version, type, flags, stream id and
// length, big-endian. The length is the payload's for DATA and the value
// for the other types, which carry no payload.
const (
	yamuxHeaderSize = 12
	yamuxTypeData   = 0
	yamuxTypePing   = 2
	yamuxFlagSYN    = 1
)

// guard is the host's end of the channel as yamux sees it: reads pass
// frames through except PINGs, which are dropped, and fail at the first
// SYN. Writes and Close go to the channel unchanged.
type guard struct {
	io.ReadWriteCloser
	// hdr holds the header being read; hdr[:pending] is the part of it
	// not yet returned to yamux (after a full header has been read and
	// let through).
	hdr     [yamuxHeaderSize]byte
	pending int
	// payload is how many bytes of the current DATA payload are left to
	// pass through.
	payload uint32
	// err, once set, is returned by every later Read.
	err error
	// violation is err when the guest broke the rules, for the Client
	// to report once the session is gone.
	violation atomic.Pointer[error]
}

func newGuard(conn io.ReadWriteCloser) *guard { return &guard{ReadWriteCloser: conn} }

// brokenRule returns why the guard refused the guest's frames, or nil.
func (g *guard) brokenRule() error {
	if err := g.violation.Load(); err != nil {
		return *err
	}
	return nil
}

// Read is called by yamux's receive loop only (one reader).
func (g *guard) Read(p []byte) (int, error) {
	if g.err != nil {
		return 0, g.err
	}
	if len(p) == 0 {
		return 0, nil
	}
	for {
		if g.pending > 0 {
			n := copy(p, g.hdr[yamuxHeaderSize-g.pending:])
			g.pending -= n
			return n, nil
		}
		if g.payload > 0 {
			n, err := g.ReadWriteCloser.Read(p[:min(uint32(len(p)), g.payload)])
			g.payload -= uint32(n)
			return n, err
		}
		if _, err := io.ReadFull(g.ReadWriteCloser, g.hdr[:]); err != nil {
			return 0, err // io.EOF only between frames
		}
		typ, flags := g.hdr[1], binary.BigEndian.Uint16(g.hdr[2:4])
		switch {
		case g.hdr[0] != 0:
			// Not yamux v0: yamux says so and ends the session.
		case typ == yamuxTypePing:
			continue
		case flags&yamuxFlagSYN != 0:
			g.err = fmt.Errorf("%w: the guest opened stream %d; only the host opens streams",
				ErrProtocol, binary.BigEndian.Uint32(g.hdr[4:8]))
			g.violation.Store(&g.err)
			return 0, g.err
		case typ == yamuxTypeData:
			g.payload = binary.BigEndian.Uint32(g.hdr[8:12])
		}
		g.pending = yamuxHeaderSize
	}
}
