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
// Only the baseline protocol is relayed: the fixed-newstyle handshake of
// blockstore/nbd on both sides (nbd.ClientHandshake toward the host,
// nbd.ServerHandshake toward the guest, with the same limits as the host's
// server), simple replies. Structured replies and extensions are never
// negotiated with either side.
package nbdrelay

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"

	"github.com/torkbot/sandbox/blockstore/nbd"
	"github.com/torkbot/sandbox/blockstore/nbd/wire"
)

// What the relay passes on.
const (
	// relayedTFlags are the transmission flags passed from the host to the
	// guest: HAS_FLAGS, READ_ONLY, SEND_FLUSH, SEND_FUA, ROTATIONAL,
	// SEND_TRIM, SEND_WRITE_ZEROES, CAN_MULTI_CONN. Anything else (DF,
	// BLOCK_STATUS, CACHE...) needs replies or commands not relayed.
	relayedTFlags = 0x17f
	// relayedCmdFlags are the command flags passed to the host: FUA and
	// NO_HOLE. DF would ask for a structured reply.
	relayedCmdFlags = 0x3
)

// Relay is one host NBD session shared by successive guest connections.
// Open it, run Run for the life of the session, and hand every guest
// connection to ServeGuest.
type Relay struct {
	host   io.ReadWriteCloser
	name   string
	export nbd.Export

	// writeMu serialises whole requests on the host stream.
	writeMu sync.Mutex

	mu sync.Mutex
	// pending maps the relay's cookies to the guest requests awaiting a
	// host reply.
	pending map[uint64]pending
	next    uint64
	closed  bool
	err     error // why the host session ended, once it has
}

type pending struct {
	guest  *guestConn
	cookie uint64 // the guest's
	read   uint32 // bytes of data a successful reply carries (READ)
}

// guestConn is one guest connection; its writes are serialised by mu.
type guestConn struct {
	mu   sync.Mutex
	conn io.Writer
	gone bool
}

// Open runs the client handshake on host for export name, which the relay
// then offers its guests under the same name.
func Open(host io.ReadWriteCloser, name string) (*Relay, error) {
	exp, err := nbd.ClientHandshake(host, name)
	if err != nil {
		return nil, err
	}
	exp.Flags &= relayedTFlags
	return &Relay{host: host, name: name, export: exp, pending: map[uint64]pending{}}, nil
}

// Export is the host's export as the guest is shown it.
func (r *Relay) Export() nbd.Export { return r.export }

// ErrHostGone is returned once the host session has ended.
var ErrHostGone = errors.New("nbdrelay: host NBD session ended")

// Run reads the host's replies and passes each to the guest connection that
// asked, until the host session ends or ctx is done; then it closes host.
func (r *Relay) Run(ctx context.Context) error {
	stop := context.AfterFunc(ctx, func() { r.host.Close() })
	defer stop()
	err := r.readReplies()
	r.host.Close()
	r.mu.Lock()
	r.closed = true
	r.err = err
	r.pending = nil
	r.mu.Unlock()
	if ctx.Err() != nil {
		return ctx.Err()
	}
	return err
}

func (r *Relay) readReplies() error {
	var hdr [wire.ReplySize]byte
	be := binary.BigEndian
	for {
		if _, err := io.ReadFull(r.host, hdr[:]); err != nil {
			return fmt.Errorf("%w: %v", ErrHostGone, err)
		}
		if be.Uint32(hdr[0:]) != wire.SimpleReplyMagic {
			return fmt.Errorf("%w: bad reply magic %#x", ErrHostGone, be.Uint32(hdr[0:]))
		}
		errno, cookie := be.Uint32(hdr[4:]), be.Uint64(hdr[8:])
		r.mu.Lock()
		p, ok := r.pending[cookie]
		delete(r.pending, cookie)
		r.mu.Unlock()
		if !ok {
			return fmt.Errorf("%w: reply to unknown cookie %d", ErrHostGone, cookie)
		}
		var data []byte
		if errno == 0 && p.read > 0 {
			data = make([]byte, p.read)
			if _, err := io.ReadFull(r.host, data); err != nil {
				return fmt.Errorf("%w: %v", ErrHostGone, err)
			}
		}
		p.guest.reply(errno, p.cookie, data)
	}
}

// reply writes one simple reply; a connection that failed or has been
// replaced is skipped (its requests are re-sent on the next one).
func (g *guestConn) reply(errno uint32, cookie uint64, data []byte) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.gone {
		return
	}
	msg := wire.AppendSimpleReply(make([]byte, 0, wire.ReplySize+len(data)), errno, cookie)
	if _, err := g.conn.Write(append(msg, data...)); err != nil {
		g.gone = true
	}
}

func (g *guestConn) drop() {
	g.mu.Lock()
	g.gone = true
	g.mu.Unlock()
}

// ServeGuest runs one guest connection: the server handshake, then its
// requests forwarded to the host, until the guest disconnects (NBD_CMD_DISC
// or EOF), conn fails or ctx is done. It closes conn. Requests the host has
// not answered when it returns are answered to nobody.
func (r *Relay) ServeGuest(ctx context.Context, conn net.Conn) error {
	defer conn.Close()
	stop := context.AfterFunc(ctx, func() { conn.Close() })
	defer stop()
	g := &guestConn{conn: conn}
	defer g.drop()
	ok, err := nbd.ServerHandshake(conn, conn, r.name, r.export)
	if err != nil || !ok {
		return err
	}
	var hdr [wire.RequestSize]byte
	for {
		if _, err := io.ReadFull(conn, hdr[:]); err != nil {
			if errors.Is(err, io.EOF) {
				return nil
			}
			return err
		}
		req, err := wire.ParseRequest(hdr[:])
		if err != nil {
			return err
		}
		var payload []byte
		if req.Type == wire.CmdWrite {
			if req.Length > wire.MaxPayload {
				// Its payload cannot be skipped safely: end the connection.
				return fmt.Errorf("nbdrelay: guest write of %d bytes exceeds %d", req.Length, wire.MaxPayload)
			}
			payload = make([]byte, req.Length)
			if _, err := io.ReadFull(conn, payload); err != nil {
				return err
			}
		}
		switch req.Type {
		case wire.CmdDisc:
			// The host session outlives this connection: not forwarded.
			return nil
		case wire.CmdRead, wire.CmdWrite, wire.CmdFlush, wire.CmdTrim, wire.CmdWriteZeroes:
		default:
			g.reply(wire.ErrInval, req.Cookie, nil)
			continue
		}
		if req.Type == wire.CmdRead && req.Length > wire.MaxPayload {
			g.reply(wire.ErrOverflow, req.Cookie, nil)
			continue
		}
		if err := r.forward(g, req, payload); err != nil {
			g.reply(wire.ErrShutdown, req.Cookie, nil)
			return err
		}
	}
}

// forward sends req to the host under a cookie of the relay's.
func (r *Relay) forward(g *guestConn, req wire.Request, payload []byte) error {
	p := pending{guest: g, cookie: req.Cookie}
	if req.Type == wire.CmdRead {
		p.read = req.Length
	}
	r.mu.Lock()
	if r.closed {
		err := r.err
		r.mu.Unlock()
		if err == nil {
			err = ErrHostGone
		}
		return err
	}
	r.next++
	cookie := r.next
	r.pending[cookie] = p
	r.mu.Unlock()

	out := req
	out.Cookie = cookie
	out.Flags &= relayedCmdFlags
	msg := out.Append(make([]byte, 0, wire.RequestSize+len(payload)))
	r.writeMu.Lock()
	_, err := r.host.Write(append(msg, payload...))
	r.writeMu.Unlock()
	if err != nil {
		return fmt.Errorf("%w: %v", ErrHostGone, err)
	}
	return nil
}
