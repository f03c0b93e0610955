// Package wire holds the NBD protocol's wire format (doc/proto.md of the
// NBD project, https://github.com/NetworkBlockDevice/nbd): the constants
// and the transmission-phase request and simple reply headers, for the
// server in package nbd and the libkrun helper's relay (vmm/krun/nbdrelay),
// which speaks it on both sides.
package wire

import (
	"encoding/binary"
	"errors"
	"fmt"
)

// Handshake magics and flags.
const (
	NBDMagic          = 0x4e42444d41474943 // "NBDMAGIC"
	OptMagic          = 0x49484156454f5054 // "IHAVEOPT"
	OptReplyMagic     = 0x0003e889045565a9
	FlagFixedNewstyle = 1 << 0
	FlagNoZeroes      = 1 << 1
)

// Options and option replies.
const (
	OptExportName = 1
	OptAbort      = 2
	OptList       = 3
	OptInfo       = 6
	OptGo         = 7

	RepAck        = 1
	RepServer     = 2
	RepInfo       = 3
	RepErrUnsup   = 1<<31 + 1
	RepErrInvalid = 1<<31 + 3
	RepErrUnknown = 1<<31 + 6
	RepErrTooBig  = 1<<31 + 9

	InfoExport    = 0
	InfoBlockSize = 3
)

// Transmission flags of an export.
const (
	TFlagHasFlags  = 1 << 0
	TFlagReadOnly  = 1 << 1
	TFlagFlush     = 1 << 2
	TFlagFUA       = 1 << 3
	TFlagTrim      = 1 << 5
	TFlagWriteZero = 1 << 6
)

// Commands, their flags, and the errnos replies carry.
const (
	CmdRead        = 0
	CmdWrite       = 1
	CmdDisc        = 2
	CmdFlush       = 3
	CmdTrim        = 4
	CmdWriteZeroes = 6

	CmdFlagFUA = 1 << 0

	ErrPerm     = 1
	ErrIO       = 5
	ErrInval    = 22
	ErrNoSpc    = 28
	ErrOverflow = 75
	ErrShutdown = 108
	ErrNotSup   = 95
)

// Header sizes and the payload bound both sides enforce.
const (
	RequestMagic     = 0x25609513
	SimpleReplyMagic = 0x67446698
	RequestSize      = 28
	ReplySize        = 16

	// MaxPayload is the largest READ or WRITE accepted (advertised as the
	// maximum block size). Larger WRITEs end the connection, since their
	// payload cannot be trusted to be skipped; larger READs get EOVERFLOW.
	MaxPayload = 32 << 20
)

// ErrBadMagic is a request header that does not start with RequestMagic.
var ErrBadMagic = errors.New("nbd: bad request magic")

// Request is one transmission-phase request header.
type Request struct {
	Flags  uint16
	Type   uint16
	Cookie uint64
	Offset uint64
	Length uint32
}

// ParseRequest decodes a RequestSize-byte request header.
func ParseRequest(b []byte) (Request, error) {
	if len(b) != RequestSize {
		return Request{}, fmt.Errorf("nbd: request header is %d bytes", len(b))
	}
	be := binary.BigEndian
	if be.Uint32(b) != RequestMagic {
		return Request{}, ErrBadMagic
	}
	return Request{
		Flags:  be.Uint16(b[4:]),
		Type:   be.Uint16(b[6:]),
		Cookie: be.Uint64(b[8:]),
		Offset: be.Uint64(b[16:]),
		Length: be.Uint32(b[24:]),
	}, nil
}

// Append appends r's encoding to b.
func (r Request) Append(b []byte) []byte {
	be := binary.BigEndian
	b = be.AppendUint32(b, RequestMagic)
	b = be.AppendUint16(b, r.Flags)
	b = be.AppendUint16(b, r.Type)
	b = be.AppendUint64(b, r.Cookie)
	b = be.AppendUint64(b, r.Offset)
	return be.AppendUint32(b, r.Length)
}

// AppendSimpleReply appends a simple reply header to b.
func AppendSimpleReply(b []byte, errno uint32, cookie uint64) []byte {
	be := binary.BigEndian
	b = be.AppendUint32(b, SimpleReplyMagic)
	b = be.AppendUint32(b, errno)
	return be.AppendUint64(b, cookie)
}
