// Package nbdrelay keeps one NBD session with the host's block server alive
// for a guest whose connections to it may come and go.
//
// Under libkrun the guest attaches its root disk itself (the kernel's nbd
// driver over a vsock channel), and the helper process sits between the
// guest's connection and the host's NBD server (blockstore/nbd), which
// serves exactly one session on a socket pair. Should the guest's
// connection drop, the guest reconnects and needs a fresh handshake, while
// the host session must go on: a half-forwarded request would corrupt its
// stream. So the relay speaks NBD on both sides: a client once toward the
// host, a server toward each guest connection, and it forwards whole
// requests under cookies of its own. Replies to a connection that has gone
// are dropped; the guest kernel re-sends those requests on the new
// connection (nbd's dead_conn_timeout + NBD_CMD_RECONFIGURE), which is safe
// because NBD reads, writes, trims and flushes may be repeated.
//
// Only the baseline protocol is relayed: fixed newstyle handshake,
// NBD_OPT_GO/INFO/EXPORT_NAME, simple replies. Structured replies and
// extensions are never negotiated with either side.
package nbdrelay

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
)

// Wire constants of the NBD protocol (doc/proto.md of the NBD project), the
// subset this package speaks.
const (
	nbdMagic      = 0x4e42444d41474943 // "NBDMAGIC"
	optMagic      = 0x49484156454f5054 // "IHAVEOPT"
	optReplyMagic = 0x0003e889045565a9
	requestMagic  = 0x25609513
	replyMagic    = 0x67446698

	flagFixedNewstyle = 1 << 0
	flagNoZeroes      = 1 << 1

	optExportName = 1
	optAbort      = 2
	optInfo       = 6
	optGo         = 7

	repAck      = 1
	repInfo     = 3
	repErrUnsup = 1<<31 + 1
	repErrInval = 1<<31 + 3
	infoExport  = 0

	cmdRead        = 0
	cmdWrite       = 1
	cmdDisc        = 2
	cmdFlush       = 3
	cmdTrim        = 4
	cmdWriteZeroes = 6

	errInval    = 22
	errOverflow = 75
	errShutdown = 108

	requestSize = 28
	replySize   = 16

	// MaxPayload bounds one READ or WRITE, as blockstore/nbd does.
	MaxPayload = 32 << 20
	// maxOptionLength bounds one handshake option's data.
	maxOptionLength = 4096
	// maxOptions bounds a handshake, so a client cannot loop forever.
	maxOptions = 64

	// relayedTFlags are the transmission flags passed from the host to the
	// guest: HAS_FLAGS, READ_ONLY, SEND_FLUSH, SEND_FUA, ROTATIONAL,
	// SEND_TRIM, SEND_WRITE_ZEROES, CAN_MULTI_CONN. Anything else (DF,
	// BLOCK_STATUS, CACHE...) needs replies or commands not relayed.
	relayedTFlags = 0x17f
	// relayedCmdFlags are the command flags passed to the host: FUA and
	// NO_HOLE. DF would ask for a structured reply.
	relayedCmdFlags = 0x3
)

// Export is what a handshake learns about the export.
type Export struct {
	Size  uint64
	Flags uint16 // transmission flags
}

// ReadOnly reports whether the server refuses writes.
func (e Export) ReadOnly() bool { return e.Flags&(1<<1) != 0 }

// ErrHandshake wraps every handshake failure.
var ErrHandshake = errors.New("nbd handshake failed")

// Handshake runs the client side of a fixed-newstyle handshake on rw and
// selects export name with NBD_OPT_GO. On success rw is in the transmission
// phase.
func Handshake(rw io.ReadWriter, name string) (Export, error) {
	var hello [18]byte
	if _, err := io.ReadFull(rw, hello[:]); err != nil {
		return Export{}, fmt.Errorf("%w: read greeting: %v", ErrHandshake, err)
	}
	be := binary.BigEndian
	if be.Uint64(hello[0:]) != nbdMagic || be.Uint64(hello[8:]) != optMagic {
		return Export{}, fmt.Errorf("%w: not a newstyle NBD server", ErrHandshake)
	}
	serverFlags := be.Uint16(hello[16:])
	if serverFlags&flagFixedNewstyle == 0 {
		return Export{}, fmt.Errorf("%w: server lacks fixed newstyle", ErrHandshake)
	}
	clientFlags := uint32(flagFixedNewstyle)
	if serverFlags&flagNoZeroes != 0 {
		clientFlags |= flagNoZeroes
	}
	// NBD_OPT_GO: name length, name, no information requests.
	msg := be.AppendUint32(nil, clientFlags)
	msg = be.AppendUint64(msg, optMagic)
	msg = be.AppendUint32(msg, optGo)
	msg = be.AppendUint32(msg, uint32(4+len(name)+2))
	msg = be.AppendUint32(msg, uint32(len(name)))
	msg = append(msg, name...)
	msg = be.AppendUint16(msg, 0)
	if _, err := rw.Write(msg); err != nil {
		return Export{}, fmt.Errorf("%w: send NBD_OPT_GO: %v", ErrHandshake, err)
	}
	var exp Export
	gotInfo := false
	for range maxOptions {
		var hdr [20]byte
		if _, err := io.ReadFull(rw, hdr[:]); err != nil {
			return Export{}, fmt.Errorf("%w: read option reply: %v", ErrHandshake, err)
		}
		if be.Uint64(hdr[0:]) != optReplyMagic || be.Uint32(hdr[8:]) != optGo {
			return Export{}, fmt.Errorf("%w: malformed option reply", ErrHandshake)
		}
		typ, n := be.Uint32(hdr[12:]), be.Uint32(hdr[16:])
		if n > maxOptionLength {
			return Export{}, fmt.Errorf("%w: option reply of %d bytes", ErrHandshake, n)
		}
		data := make([]byte, n)
		if _, err := io.ReadFull(rw, data); err != nil {
			return Export{}, fmt.Errorf("%w: read option reply: %v", ErrHandshake, err)
		}
		switch {
		case typ == repAck:
			if !gotInfo {
				return Export{}, fmt.Errorf("%w: server sent no export information", ErrHandshake)
			}
			return exp, nil
		case typ == repInfo:
			if len(data) >= 12 && be.Uint16(data) == infoExport {
				exp = Export{Size: be.Uint64(data[2:]), Flags: be.Uint16(data[10:])}
				gotInfo = true
			}
		case typ&(1<<31) != 0:
			return Export{}, fmt.Errorf("%w: export %q refused (error reply %#x: %s)", ErrHandshake, name, typ, data)
		}
	}
	return Export{}, fmt.Errorf("%w: too many option replies", ErrHandshake)
}

// serverHandshake runs the server side toward a guest, offering exp under
// any name. It returns done=false when the client aborted.
func serverHandshake(rw io.ReadWriter, exp Export) (ok bool, err error) {
	be := binary.BigEndian
	hello := be.AppendUint64(nil, nbdMagic)
	hello = be.AppendUint64(hello, optMagic)
	hello = be.AppendUint16(hello, flagFixedNewstyle|flagNoZeroes)
	if _, err := rw.Write(hello); err != nil {
		return false, err
	}
	var cf [4]byte
	if _, err := io.ReadFull(rw, cf[:]); err != nil {
		return false, err
	}
	noZeroes := be.Uint32(cf[:])&flagNoZeroes != 0
	flags := exp.Flags & relayedTFlags
	for range maxOptions {
		var hdr [16]byte
		if _, err := io.ReadFull(rw, hdr[:]); err != nil {
			return false, err
		}
		if be.Uint64(hdr[0:]) != optMagic {
			return false, errors.New("nbdrelay: bad option magic from guest")
		}
		opt, n := be.Uint32(hdr[8:]), be.Uint32(hdr[12:])
		if n > maxOptionLength {
			return false, fmt.Errorf("nbdrelay: guest option of %d bytes", n)
		}
		// The name is not checked: the channel has one export.
		if _, err := io.CopyN(io.Discard, rw, int64(n)); err != nil {
			return false, err
		}
		switch opt {
		case optExportName:
			msg := be.AppendUint64(nil, exp.Size)
			msg = be.AppendUint16(msg, flags)
			if !noZeroes {
				msg = append(msg, make([]byte, 124)...)
			}
			_, err := rw.Write(msg)
			return err == nil, err
		case optGo, optInfo:
			info := be.AppendUint16(nil, infoExport)
			info = be.AppendUint64(info, exp.Size)
			info = be.AppendUint16(info, flags)
			if err := optReply(rw, opt, repInfo, info); err != nil {
				return false, err
			}
			if err := optReply(rw, opt, repAck, nil); err != nil {
				return false, err
			}
			if opt == optGo {
				return true, nil
			}
		case optAbort:
			optReply(rw, opt, repAck, nil)
			return false, nil
		default:
			if err := optReply(rw, opt, repErrUnsup, nil); err != nil {
				return false, err
			}
		}
	}
	return false, errors.New("nbdrelay: too many handshake options from guest")
}

func optReply(w io.Writer, opt, typ uint32, data []byte) error {
	be := binary.BigEndian
	msg := be.AppendUint64(nil, optReplyMagic)
	msg = be.AppendUint32(msg, opt)
	msg = be.AppendUint32(msg, typ)
	msg = be.AppendUint32(msg, uint32(len(data)))
	_, err := w.Write(append(msg, data...))
	return err
}

// request is one transmission-phase request header.
type request struct {
	flags  uint16
	typ    uint16
	cookie uint64
	offset uint64
	length uint32
}

var errBadMagic = errors.New("nbdrelay: bad request magic")

func parseRequest(b []byte) (request, error) {
	be := binary.BigEndian
	if len(b) != requestSize {
		return request{}, fmt.Errorf("nbdrelay: request header is %d bytes", len(b))
	}
	if be.Uint32(b) != requestMagic {
		return request{}, errBadMagic
	}
	return request{flags: be.Uint16(b[4:]), typ: be.Uint16(b[6:]), cookie: be.Uint64(b[8:]), offset: be.Uint64(b[16:]), length: be.Uint32(b[24:])}, nil
}

func (r request) append(b []byte) []byte {
	be := binary.BigEndian
	b = be.AppendUint32(b, requestMagic)
	b = be.AppendUint16(b, r.flags)
	b = be.AppendUint16(b, r.typ)
	b = be.AppendUint64(b, r.cookie)
	b = be.AppendUint64(b, r.offset)
	return be.AppendUint32(b, r.length)
}

func appendReply(b []byte, errno uint32, cookie uint64) []byte {
	be := binary.BigEndian
	b = be.AppendUint32(b, replyMagic)
	b = be.AppendUint32(b, errno)
	return be.AppendUint64(b, cookie)
}
