package nbd

import (
	"encoding/binary"
	"errors"
	"fmt"
)

// Wire constants, from the NBD protocol specification
// (https://github.com/NetworkBlockDevice/nbd/blob/master/doc/proto.md).
const (
	nbdMagic       = 0x4e42444d41474943 // "NBDMAGIC"
	optMagic       = 0x49484156454f5054 // "IHAVEOPT"
	optReplyMagic  = 0x0003e889045565a9
	requestMagic   = 0x25609513
	simpleReplyMag = 0x67446698

	flagFixedNewstyle = 1 << 0
	flagNoZeroes      = 1 << 1

	optExportName = 1
	optAbort      = 2
	optList       = 3
	optInfo       = 6
	optGo         = 7

	repAck         = 1
	repServer      = 2
	repInfo        = 3
	repErrUnsup    = 1<<31 + 1
	repErrInvalid  = 1<<31 + 3
	repErrUnknown  = 1<<31 + 6
	repErrTooBig   = 1<<31 + 9
	infoExport     = 0
	infoBlockSize  = 3
	tflagHasFlags  = 1 << 0
	tflagReadOnly  = 1 << 1
	tflagFlush     = 1 << 2
	tflagFUA       = 1 << 3
	tflagTrim      = 1 << 5
	tflagWriteZero = 1 << 6

	cmdFlagFUA = 1 << 0

	cmdRead        = 0
	cmdWrite       = 1
	cmdDisc        = 2
	cmdFlush       = 3
	cmdTrim        = 4
	cmdWriteZeroes = 6

	errPerm     = 1
	errIO       = 5
	errInval    = 22
	errNoSpc    = 28
	errOverflow = 75
	errNotSup   = 95

	requestSize = 28

	// MaxPayload is the largest READ or WRITE we accept (advertised as the
	// maximum block size). Larger WRITEs end the connection, since their
	// payload cannot be trusted to be skipped; larger READs get EOVERFLOW.
	MaxPayload = 32 << 20

	// maxOptionLength bounds one handshake option's data.
	maxOptionLength = 4096
	// maxOptions bounds the handshake so a client cannot loop forever.
	maxOptions = 1024
)

var errBadMagic = errors.New("nbd: bad request magic")

// request is one transmission-phase request header.
type request struct {
	flags  uint16
	typ    uint16
	cookie uint64
	offset uint64
	length uint32
}

// parseRequest decodes a 28-byte request header.
func parseRequest(b []byte) (request, error) {
	if len(b) != requestSize {
		return request{}, fmt.Errorf("nbd: request header is %d bytes", len(b))
	}
	be := binary.BigEndian
	if be.Uint32(b) != requestMagic {
		return request{}, errBadMagic
	}
	return request{
		flags:  be.Uint16(b[4:]),
		typ:    be.Uint16(b[6:]),
		cookie: be.Uint64(b[8:]),
		offset: be.Uint64(b[16:]),
		length: be.Uint32(b[24:]),
	}, nil
}

// check returns the NBD errno for a request against an export of size bytes,
// or 0 if it may run. It never lets offset+length pass the end.
func (r request) check(size uint64, readOnly bool) uint32 {
	switch r.typ {
	case cmdRead, cmdWrite, cmdTrim, cmdWriteZeroes:
	case cmdFlush:
		if r.offset != 0 || r.length != 0 {
			return errInval
		}
		return 0
	default:
		return errInval
	}
	if (r.typ == cmdWrite || r.typ == cmdTrim || r.typ == cmdWriteZeroes) && readOnly {
		return errPerm
	}
	if (r.typ == cmdRead || r.typ == cmdWrite) && r.length > MaxPayload {
		return errOverflow
	}
	if r.offset > size || uint64(r.length) > size-r.offset {
		if r.typ == cmdWrite || r.typ == cmdWriteZeroes {
			return errNoSpc
		}
		return errInval
	}
	return 0
}
