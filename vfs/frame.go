package vfs

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
)

// The FUSE wire format on the channel is what /dev/fuse carries: each
// request starts with a fuse_in_header (40 bytes) whose first field is the
// request's total length, each reply with a fuse_out_header (16 bytes)
// whose first field is the reply's total length. Both are in the byte order
// of the guest, which runs on the host's CPU.
const (
	inHeaderSize  = 40
	outHeaderSize = 16

	// xattrSizeMax is Linux's XATTR_SIZE_MAX: the largest xattr value, and
	// the largest xattr name list.
	xattrSizeMax = 64 << 10
	// requestOverhead bounds what a request holds besides its data
	// payload: the in-header, the operation's struct, two names of up to
	// 255 bytes and a symlink target of up to PATH_MAX.
	requestOverhead = 8 << 10
	// replyOverhead bounds the out-header and the operation's struct.
	replyOverhead = 4 << 10
	pageSize      = 4 << 10
)

// ErrBadRequest reports a request stream that breaks the framing: a
// length too short for a header or beyond the negotiated limits.
var ErrBadRequest = errors.New("vfs: malformed request")

// payloadLimit is the largest data payload of a request or a reply: a
// WRITE or READ of maxWrite bytes (the kernel asks in whole pages), or an
// xattr value.
func payloadLimit(maxWrite int) int {
	return max((maxWrite+pageSize-1)/pageSize*pageSize, xattrSizeMax)
}

// readRequest reads one request from r. It checks the length before
// allocating, so a hostile length costs nothing; limit is the largest
// acceptable request.
func readRequest(r io.Reader, limit int) ([]byte, error) {
	var header [inHeaderSize]byte
	if _, err := io.ReadFull(r, header[:]); err != nil {
		if errors.Is(err, io.ErrUnexpectedEOF) {
			return nil, fmt.Errorf("%w: stream ends inside a request header", ErrBadRequest)
		}
		return nil, err // io.EOF between requests: the peer is done
	}
	length := binary.NativeEndian.Uint32(header[0:4])
	if length < inHeaderSize || uint64(length) > uint64(limit) {
		return nil, fmt.Errorf("%w: length %d outside [%d, %d]", ErrBadRequest, length, inHeaderSize, limit)
	}
	req := make([]byte, length)
	copy(req, header[:])
	if _, err := io.ReadFull(r, req[inHeaderSize:]); err != nil {
		if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
			return nil, fmt.Errorf("%w: stream ends inside a request of %d bytes", ErrBadRequest, length)
		}
		return nil, err
	}
	return req, nil
}

// Fields of a request's in-header that the session needs before go-fuse
// decodes the request.
func requestOpcode(req []byte) uint32 { return binary.NativeEndian.Uint32(req[4:8]) }
func requestUnique(req []byte) uint64 { return binary.NativeEndian.Uint64(req[8:16]) }

// errorReply is a reply carrying only errno for request unique.
func errorReply(unique uint64, errno int32) []byte {
	b := make([]byte, outHeaderSize)
	binary.NativeEndian.PutUint32(b[0:4], outHeaderSize)
	binary.NativeEndian.PutUint32(b[4:8], uint32(-errno))
	binary.NativeEndian.PutUint64(b[8:16], unique)
	return b
}

// FUSE opcodes the session treats specially (linux/fuse.h).
const (
	opForget      = 2
	opInit        = 26
	opInterrupt   = 36
	opBatchForget = 42
)
