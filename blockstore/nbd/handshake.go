package nbd

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"

	"github.com/torkbot/sandbox/blockstore/nbd/wire"
)

// Handshake bounds, the same for every server and client here (Serve, the
// libkrun helper's relay, the guest's nbdattach).
const (
	// maxOptionLength bounds one option's data or one option reply's data.
	maxOptionLength = 4096
	// maxOptions bounds the options of one handshake (and a client's
	// replies), so a peer cannot keep it going forever. Real clients send a
	// handful (QEMU: STRUCTURED_REPLY, LIST or GO, and a few more).
	maxOptions = 64
)

// Export is what a handshake tells a client about the export.
type Export struct {
	Size  uint64
	Flags uint16 // transmission flags (wire.TFlag*)
}

// ReadOnly reports whether the server refuses writes.
func (e Export) ReadOnly() bool { return e.Flags&wire.TFlagReadOnly != 0 }

// ServerHandshake runs the server side of the fixed-newstyle handshake,
// reading from r and writing each message to w in one Write. It offers exp
// under name and under the default name "". It answers
// NBD_OPT_EXPORT_NAME, INFO, GO (with NBD_INFO_BLOCK_SIZE when asked),
// LIST and ABORT; any other option gets NBD_REP_ERR_UNSUP, one longer than
// maxOptionLength NBD_REP_ERR_TOO_BIG. ok reports that the client entered
// the transmission phase; false with a nil error means it aborted.
func ServerHandshake(r io.Reader, w io.Writer, name string, exp Export) (ok bool, err error) {
	be := binary.BigEndian
	hello := be.AppendUint64(nil, wire.NBDMagic)
	hello = be.AppendUint64(hello, wire.OptMagic)
	hello = be.AppendUint16(hello, wire.FlagFixedNewstyle|wire.FlagNoZeroes)
	if _, err := w.Write(hello); err != nil {
		return false, fmt.Errorf("cannot send nbd greeting: %w", err)
	}
	var cf [4]byte
	if _, err := io.ReadFull(r, cf[:]); err != nil {
		return false, fmt.Errorf("cannot read nbd client flags: %w", err)
	}
	clientFlags := be.Uint32(cf[:])
	if clientFlags&^uint32(wire.FlagFixedNewstyle|wire.FlagNoZeroes) != 0 {
		return false, fmt.Errorf("nbd: unknown client flags %#x", clientFlags)
	}
	noZeroes := clientFlags&wire.FlagNoZeroes != 0
	nameOK := func(n string) bool { return n == "" || n == name }
	reply := func(opt, typ uint32, data []byte) error {
		msg := be.AppendUint64(nil, wire.OptReplyMagic)
		msg = be.AppendUint32(msg, opt)
		msg = be.AppendUint32(msg, typ)
		msg = be.AppendUint32(msg, uint32(len(data)))
		if _, err := w.Write(append(msg, data...)); err != nil {
			return fmt.Errorf("cannot send nbd option reply: %w", err)
		}
		return nil
	}
	for range maxOptions {
		var oh [16]byte
		if _, err := io.ReadFull(r, oh[:]); err != nil {
			return false, fmt.Errorf("cannot read nbd option: %w", err)
		}
		if be.Uint64(oh[:]) != wire.OptMagic {
			return false, errors.New("nbd: bad option magic")
		}
		opt, length := be.Uint32(oh[8:]), be.Uint32(oh[12:])
		if length > maxOptionLength {
			// Too long to be any option we serve: skip it (a bounded
			// discard: at most 4 GiB) and refuse.
			if _, err := io.CopyN(io.Discard, r, int64(length)); err != nil {
				return false, fmt.Errorf("cannot skip nbd option: %w", err)
			}
			if err := reply(opt, wire.RepErrTooBig, nil); err != nil {
				return false, err
			}
			continue
		}
		data := make([]byte, length)
		if _, err := io.ReadFull(r, data); err != nil {
			return false, fmt.Errorf("cannot read nbd option data: %w", err)
		}
		var err error
		switch opt {
		case wire.OptExportName:
			// No reply is possible to a bad name: the spec says hang up.
			if !nameOK(string(data)) {
				return false, fmt.Errorf("nbd: unknown export %q", data)
			}
			msg := be.AppendUint64(nil, exp.Size)
			msg = be.AppendUint16(msg, exp.Flags)
			if !noZeroes {
				msg = append(msg, make([]byte, 124)...)
			}
			if _, err := w.Write(msg); err != nil {
				return false, fmt.Errorf("cannot send nbd export: %w", err)
			}
			return true, nil
		case wire.OptAbort:
			reply(opt, wire.RepAck, nil) // best effort; the client may have gone
			return false, nil
		case wire.OptList:
			if length != 0 {
				err = reply(opt, wire.RepErrInvalid, nil)
				break
			}
			b := be.AppendUint32(nil, uint32(len(name)))
			if err = reply(opt, wire.RepServer, append(b, name...)); err == nil {
				err = reply(opt, wire.RepAck, nil)
			}
		case wire.OptInfo, wire.OptGo:
			n, infos, valid := parseInfoRequest(data)
			switch {
			case !valid:
				err = reply(opt, wire.RepErrInvalid, nil)
			case !nameOK(n):
				err = reply(opt, wire.RepErrUnknown, nil)
			default:
				if err = infoReplies(reply, opt, exp, infos); err == nil && opt == wire.OptGo {
					return true, nil
				}
			}
		default:
			err = reply(opt, wire.RepErrUnsup, nil)
		}
		if err != nil {
			return false, err
		}
	}
	return false, errors.New("nbd: too many handshake options")
}

// infoReplies answers NBD_OPT_INFO/GO: the export, the block sizes when
// asked, the ack.
func infoReplies(reply func(opt, typ uint32, data []byte) error, opt uint32, exp Export, infos []uint16) error {
	be := binary.BigEndian
	b := be.AppendUint16(nil, wire.InfoExport)
	b = be.AppendUint64(b, exp.Size)
	b = be.AppendUint16(b, exp.Flags)
	if err := reply(opt, wire.RepInfo, b); err != nil {
		return err
	}
	for _, i := range infos {
		if i == wire.InfoBlockSize {
			b := be.AppendUint16(nil, wire.InfoBlockSize)
			b = be.AppendUint32(b, 1)
			b = be.AppendUint32(b, 4096)
			b = be.AppendUint32(b, MaxPayload)
			if err := reply(opt, wire.RepInfo, b); err != nil {
				return err
			}
		}
	}
	return reply(opt, wire.RepAck, nil)
}

// parseInfoRequest decodes NBD_OPT_INFO/GO data: name length, name, number of
// info requests, the requests.
func parseInfoRequest(data []byte) (name string, infos []uint16, ok bool) {
	if len(data) < 6 {
		return "", nil, false
	}
	nl := binary.BigEndian.Uint32(data)
	if uint64(nl) > uint64(len(data))-6 {
		return "", nil, false
	}
	name = string(data[4 : 4+nl])
	rest := data[4+nl:]
	n := int(binary.BigEndian.Uint16(rest))
	rest = rest[2:]
	if len(rest) != 2*n {
		return "", nil, false
	}
	for i := range n {
		infos = append(infos, binary.BigEndian.Uint16(rest[2*i:]))
	}
	return name, infos, true
}

// ErrHandshake wraps every failure of ClientHandshake.
var ErrHandshake = errors.New("nbd handshake failed")

// ClientHandshake runs the client side of a fixed-newstyle handshake on rw
// and selects export name with NBD_OPT_GO. On success rw is in the
// transmission phase. The guest's nbdattach and the libkrun helper's relay
// use it; every length the server sends is bounded as ServerHandshake
// bounds a client's.
func ClientHandshake(rw io.ReadWriter, name string) (Export, error) {
	var hello [18]byte
	if _, err := io.ReadFull(rw, hello[:]); err != nil {
		return Export{}, fmt.Errorf("%w: read greeting: %v", ErrHandshake, err)
	}
	be := binary.BigEndian
	if be.Uint64(hello[0:]) != wire.NBDMagic || be.Uint64(hello[8:]) != wire.OptMagic {
		return Export{}, fmt.Errorf("%w: not a newstyle NBD server", ErrHandshake)
	}
	serverFlags := be.Uint16(hello[16:])
	if serverFlags&wire.FlagFixedNewstyle == 0 {
		return Export{}, fmt.Errorf("%w: server lacks fixed newstyle", ErrHandshake)
	}
	clientFlags := uint32(wire.FlagFixedNewstyle)
	if serverFlags&wire.FlagNoZeroes != 0 {
		clientFlags |= wire.FlagNoZeroes
	}
	// NBD_OPT_GO: name length, name, no information requests.
	msg := be.AppendUint32(nil, clientFlags)
	msg = be.AppendUint64(msg, wire.OptMagic)
	msg = be.AppendUint32(msg, wire.OptGo)
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
		if be.Uint64(hdr[0:]) != wire.OptReplyMagic || be.Uint32(hdr[8:]) != wire.OptGo {
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
		case typ == wire.RepAck:
			if !gotInfo {
				return Export{}, fmt.Errorf("%w: server sent no export information", ErrHandshake)
			}
			return exp, nil
		case typ == wire.RepInfo:
			if len(data) >= 12 && be.Uint16(data) == wire.InfoExport {
				exp = Export{Size: be.Uint64(data[2:]), Flags: be.Uint16(data[10:])}
				gotInfo = true
			}
		case typ&(1<<31) != 0:
			return Export{}, fmt.Errorf("%w: export %q refused (error reply %#x: %q)", ErrHandshake, name, typ, data)
		}
	}
	return Export{}, fmt.Errorf("%w: too many option replies", ErrHandshake)
}
