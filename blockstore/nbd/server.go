// Package nbd serves one block device to one client over the Network Block
// Device protocol, so QEMU's NBD client can attach it as a disk. It also
// holds the one implementation of the handshake (handshake.go) for both
// sides: ServerHandshake, which Serve and the libkrun helper's relay
// (vmm/krun/nbdrelay) run toward their clients, and ClientHandshake, which
// the relay and the guest's nbdattach run toward a server. It imports only
// the standard library and its wire package, so the guest's init links it
// too.
//
// It implements the fixed-newstyle handshake with NBD_OPT_EXPORT_NAME,
// NBD_OPT_INFO, NBD_OPT_GO, NBD_OPT_LIST and NBD_OPT_ABORT (other options are
// answered NBD_REP_ERR_UNSUP), and simple replies for READ, WRITE, FLUSH,
// DISC, TRIM (accepted and ignored) and WRITE_ZEROES. FUA on a write is
// honoured by flushing the device before the reply. Requests are served one
// at a time, in order.
//
// Why not a library: the pure-Go server we reviewed (pojntfx/go-nbd) sends
// a READ's success header before checking offset+length against the export,
// discards a "payload" of Length bytes for unknown commands (which have none,
// desynchronising the stream), and answers FLUSH, TRIM and WRITE_ZEROES with
// EINVAL and ignores FUA; nbdkit's Go bindings need cgo. The protocol is
// small, so this package implements it with every client field treated as
// hostile: option and payload lengths are bounded, offsets are checked
// against the export, and FuzzServe drives the parser with arbitrary bytes.
package nbd

import (
	"bufio"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"

	"github.com/torkbot/sandbox/blockstore/nbd/wire"
)

// Device is the export. ReadAt and WriteAt always get ranges inside Size.
type Device interface {
	Size() int64
	ReadAt(ctx context.Context, p []byte, off int64) error
	WriteAt(ctx context.Context, p []byte, off int64) error
	WriteZeroes(ctx context.Context, off, n int64) error
	Flush(ctx context.Context) error
}

// Options configures Serve.
type Options struct {
	// Name is the export name clients ask for; "" (the default export) is
	// always accepted too.
	Name string
	// ReadOnly refuses WRITE, TRIM and WRITE_ZEROES with EPERM and
	// advertises the export read-only.
	ReadOnly bool
	// Log, when set, receives device errors that were reported to the client
	// as EIO.
	Log func(error)
}

// Serve runs the handshake and then serves requests on conn until the client
// disconnects (NBD_CMD_DISC or NBD_OPT_ABORT: nil), ctx is cancelled, or a
// protocol violation (an error). It closes conn before returning. A DISC
// flushes the device first, as the spec asks.
func Serve(ctx context.Context, conn net.Conn, dev Device, opts Options) error {
	defer conn.Close()
	stop := context.AfterFunc(ctx, func() { conn.Close() })
	defer stop()
	err := serve(ctx, conn, dev, opts)
	if ctx.Err() != nil {
		return ctx.Err()
	}
	return err
}

type server struct {
	ctx  context.Context
	r    *bufio.Reader
	w    *bufio.Writer
	dev  Device
	opts Options
	size uint64
}

func serve(ctx context.Context, rw io.ReadWriter, dev Device, opts Options) error {
	s := &server{ctx: ctx, r: bufio.NewReader(rw), w: bufio.NewWriter(rw), dev: dev, opts: opts, size: uint64(dev.Size())}
	// The handshake writes straight to rw, one message a Write: s.w is
	// empty until the transmission phase.
	ok, err := ServerHandshake(s.r, rw, opts.Name, Export{Size: s.size, Flags: s.transmissionFlags()})
	if err != nil || !ok {
		return err
	}
	return s.transmission()
}

func (s *server) transmissionFlags() uint16 {
	f := uint16(wire.TFlagHasFlags | wire.TFlagFlush | wire.TFlagFUA | wire.TFlagTrim | wire.TFlagWriteZero)
	if s.opts.ReadOnly {
		f |= wire.TFlagReadOnly
	}
	return f
}

func (s *server) reply(cookie uint64, errno uint32, data []byte) error {
	var b [16]byte
	binary.BigEndian.PutUint32(b[0:], wire.SimpleReplyMagic)
	binary.BigEndian.PutUint32(b[4:], errno)
	binary.BigEndian.PutUint64(b[8:], cookie)
	s.w.Write(b[:])
	s.w.Write(data)
	if err := s.w.Flush(); err != nil {
		return fmt.Errorf("cannot send nbd reply: %w", err)
	}
	return nil
}

func (s *server) ioErr(err error) uint32 {
	if s.opts.Log != nil {
		s.opts.Log(err)
	}
	return wire.ErrIO
}

func (s *server) transmission() error {
	var hdr [wire.RequestSize]byte
	var buf []byte
	for {
		if _, err := io.ReadFull(s.r, hdr[:]); err != nil {
			if errors.Is(err, io.EOF) {
				return nil // client went away between requests
			}
			return fmt.Errorf("cannot read nbd request: %w", err)
		}
		req, err := wire.ParseRequest(hdr[:])
		if err != nil {
			return err
		}
		errno := check(req, s.size, s.opts.ReadOnly)
		if req.Type == wire.CmdWrite {
			if req.Length > MaxPayload {
				return fmt.Errorf("nbd: write of %d bytes exceeds the %d byte limit", req.Length, MaxPayload)
			}
			// The payload follows whatever we answer.
			buf = grow(buf, int(req.Length))
			if _, err := io.ReadFull(s.r, buf); err != nil {
				return fmt.Errorf("cannot read nbd write payload: %w", err)
			}
		}
		if req.Type == wire.CmdDisc {
			if err := s.dev.Flush(s.ctx); err != nil && s.opts.Log != nil {
				s.opts.Log(err)
			}
			return nil
		}
		if errno != 0 {
			if err := s.reply(req.Cookie, errno, nil); err != nil {
				return err
			}
			continue
		}
		off := int64(req.Offset)
		var data []byte
		switch req.Type {
		case wire.CmdRead:
			buf = grow(buf, int(req.Length))
			if err := s.dev.ReadAt(s.ctx, buf, off); err != nil {
				errno = s.ioErr(err)
			} else {
				data = buf
			}
		case wire.CmdWrite:
			if err := s.dev.WriteAt(s.ctx, buf, off); err != nil {
				errno = s.ioErr(err)
			}
		case wire.CmdWriteZeroes:
			if err := s.dev.WriteZeroes(s.ctx, off, int64(req.Length)); err != nil {
				errno = s.ioErr(err)
			}
		case wire.CmdTrim:
			// Discard is advisory: the blocks keep their content.
		case wire.CmdFlush:
			if err := s.dev.Flush(s.ctx); err != nil {
				errno = s.ioErr(err)
			}
		}
		if errno == 0 && req.Flags&wire.CmdFlagFUA != 0 && req.Type != wire.CmdRead && req.Type != wire.CmdFlush {
			if err := s.dev.Flush(s.ctx); err != nil {
				errno = s.ioErr(err)
			}
		}
		if err := s.reply(req.Cookie, errno, data); err != nil {
			return err
		}
	}
}

func grow(b []byte, n int) []byte {
	if cap(b) < n {
		return make([]byte, n)
	}
	return b[:n]
}
