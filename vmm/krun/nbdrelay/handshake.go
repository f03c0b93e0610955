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

	"github.com/torkbot/sandbox/blockstore/nbd/wire"
)

// What the relay passes on, and handshake bounds.
const (
	// relayedTFlags are the transmission flags passed from the host to the
	// guest: HAS_FLAGS, READ_ONLY, SEND_FLUSH, SEND_FUA, ROTATIONAL,
	// SEND_TRIM, SEND_WRITE_ZEROES, CAN_MULTI_CONN. Anything else (DF,
	// BLOCK_STATUS, CACHE...) needs replies or commands not relayed.
	relayedTFlags = 0x17f
	// relayedCmdFlags are the command flags passed to the host: FUA and
	// NO_HOLE. DF would ask for a structured reply.
	relayedCmdFlags = 0x3
	// maxOptionLength bounds one handshake option's data.
	maxOptionLength = 4096
	// maxOptions bounds a handshake, so a client cannot loop forever.
	maxOptions = 64
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
			return Export{}, fmt.Errorf("%w: export %q refused (error reply %#x: %s)", ErrHandshake, name, typ, data)
		}
	}
	return Export{}, fmt.Errorf("%w: too many option replies", ErrHandshake)
}

// serverHandshake runs the server side toward a guest, offering exp under
// any name. It returns done=false when the client aborted.
func serverHandshake(rw io.ReadWriter, exp Export) (ok bool, err error) {
	be := binary.BigEndian
	hello := be.AppendUint64(nil, wire.NBDMagic)
	hello = be.AppendUint64(hello, wire.OptMagic)
	hello = be.AppendUint16(hello, wire.FlagFixedNewstyle|wire.FlagNoZeroes)
	if _, err := rw.Write(hello); err != nil {
		return false, err
	}
	var cf [4]byte
	if _, err := io.ReadFull(rw, cf[:]); err != nil {
		return false, err
	}
	noZeroes := be.Uint32(cf[:])&wire.FlagNoZeroes != 0
	flags := exp.Flags & relayedTFlags
	for range maxOptions {
		var hdr [16]byte
		if _, err := io.ReadFull(rw, hdr[:]); err != nil {
			return false, err
		}
		if be.Uint64(hdr[0:]) != wire.OptMagic {
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
		case wire.OptExportName:
			msg := be.AppendUint64(nil, exp.Size)
			msg = be.AppendUint16(msg, flags)
			if !noZeroes {
				msg = append(msg, make([]byte, 124)...)
			}
			_, err := rw.Write(msg)
			return err == nil, err
		case wire.OptGo, wire.OptInfo:
			info := be.AppendUint16(nil, wire.InfoExport)
			info = be.AppendUint64(info, exp.Size)
			info = be.AppendUint16(info, flags)
			if err := optReply(rw, opt, wire.RepInfo, info); err != nil {
				return false, err
			}
			if err := optReply(rw, opt, wire.RepAck, nil); err != nil {
				return false, err
			}
			if opt == wire.OptGo {
				return true, nil
			}
		case wire.OptAbort:
			optReply(rw, opt, wire.RepAck, nil)
			return false, nil
		default:
			if err := optReply(rw, opt, wire.RepErrUnsup, nil); err != nil {
				return false, err
			}
		}
	}
	return false, errors.New("nbdrelay: too many handshake options from guest")
}

func optReply(w io.Writer, opt, typ uint32, data []byte) error {
	be := binary.BigEndian
	msg := be.AppendUint64(nil, wire.OptReplyMagic)
	msg = be.AppendUint32(msg, opt)
	msg = be.AppendUint32(msg, typ)
	msg = be.AppendUint32(msg, uint32(len(data)))
	_, err := w.Write(append(msg, data...))
	return err
}
