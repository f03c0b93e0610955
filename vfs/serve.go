package vfs

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"log"
	"sync"
	"syscall"

	"github.com/hanwen/go-fuse/v2/fuse"
)

// Serve answers the FUSE requests that arrive on conn with fsys until conn
// reaches EOF (the guest unmounted or the channel closed; Serve returns
// nil), ctx is done (ctx.Err()), or the stream breaks the framing (an
// error wrapping ErrBadRequest). conn carries what /dev/fuse carries:
// requests one after another, each prefixed by its length, and replies the
// same way; requests are answered concurrently and out of order.
//
// Serve owns conn: it closes it before returning, and cancels the backend
// calls still running (it does not wait for a backend that ignores ctx).
func Serve(ctx context.Context, conn io.ReadWriteCloser, fsys FileSystem, opts Options) error {
	opts = opts.withDefaults()
	sessionCtx, cancel := context.WithCancel(ctx)
	defer cancel()
	s := newSession(sessionCtx, conn, fsys, opts)
	stop := context.AfterFunc(sessionCtx, func() { conn.Close() }) // unblocks the read
	defer stop()

	err := s.readLoop(sessionCtx)
	cancel()
	s.inFlight.Wait()
	conn.Close()
	switch {
	case ctx.Err() != nil:
		return ctx.Err() // and err is conn's closing
	case errors.Is(err, io.EOF):
		return nil
	case errors.Is(err, ErrBadRequest):
		return err
	}
	return fmt.Errorf("vfs: read request: %w", err)
}

// session is one connection: the reader, and the requests in flight.
type session struct {
	conn  io.ReadWriteCloser
	proto *fuse.ProtocolServer
	log   *log.Logger

	maxRequest int // largest request accepted
	replySize  int // room for the largest reply
	replyBufs  sync.Pool
	slots      chan struct{} // one per request in flight
	inFlight   sync.WaitGroup

	writeMu  sync.Mutex // one reply on conn at a time
	lostOnce sync.Once  // the first failed write closes conn

	// initialized is set once INIT is answered. Only the reader touches it.
	initialized bool
}

func newSession(ctx context.Context, conn io.ReadWriteCloser, fsys FileSystem, opts Options) *session {
	logger := log.New(opts.Log, "vfs: ", 0)
	payload := payloadLimit(opts.MaxWrite)
	s := &session{
		conn: conn,
		proto: fuse.NewProtocolServer(newFileServer(ctx, fsys, opts, logger), &fuse.MountOptions{
			MaxWrite: opts.MaxWrite,
			Logger:   logger,
			// READDIRPLUS only when the kernel expects lookups (ls -l),
			// and mmap of files opened for direct I/O (size unknown).
			ExtraCapabilities: fuse.CAP_READDIRPLUS_AUTO | fuse.CAP_DIRECT_IO_ALLOW_MMAP,
			// Files are never backed by host fds.
			DisabledCapabilities: fuse.CAP_PASSTHROUGH,
			// The kernel asks for security.capability before every
			// write; go-fuse answers "none" without a backend call.
			IgnoreSecurityLabels: true,
		}),
		log:        logger,
		maxRequest: inHeaderSize + requestOverhead + payload,
		replySize:  outHeaderSize + replyOverhead + payload,
		slots:      make(chan struct{}, opts.MaxInFlight),
	}
	s.replyBufs.New = func() any { return make([]byte, s.replySize) }
	return s
}

// readLoop reads requests until the stream ends and starts each on its way.
// INIT, FORGET and INTERRUPT are answered in line: they are cheap, INIT
// must be done before anything else runs, and an INTERRUPT must not wait
// behind the requests it would interrupt.
func (s *session) readLoop(ctx context.Context) error {
	r := bufio.NewReaderSize(s.conn, 64<<10)
	for {
		req, err := readRequest(r, s.maxRequest)
		if err != nil {
			return err
		}
		switch op := requestOpcode(req); {
		case op == opInit && !s.initialized:
			s.handle(req)
			s.initialized = true
		case op == opInit || !s.initialized:
			// go-fuse keeps what INIT negotiated unguarded: a second INIT,
			// or a request racing the first, gets EIO instead.
			s.writeReply(errorReply(requestUnique(req), int32(syscall.EIO)))
		case op == opForget || op == opBatchForget || op == opInterrupt:
			s.handle(req)
		default:
			select {
			case s.slots <- struct{}{}:
			case <-ctx.Done():
				return ctx.Err()
			}
			s.inFlight.Add(1)
			go func() {
				defer s.inFlight.Done()
				defer func() { <-s.slots }()
				s.handle(req)
			}()
		}
	}
}

// handle decodes and answers one request.
func (s *session) handle(req []byte) {
	out := s.replyBufs.Get().([]byte)
	defer s.replyBufs.Put(out)
	n, code := s.proto.HandleRequest([][]byte{req}, [][]byte{out})
	switch {
	case n > 0:
		s.writeReply(out[:n])
	case !code.Ok():
		// go-fuse could not decode it or had no room for the reply.
		s.writeReply(errorReply(requestUnique(req), int32(code)))
	}
	// n == 0 and OK: a request without reply (FORGET, INTERRUPT).
}

func (s *session) writeReply(reply []byte) {
	s.writeMu.Lock()
	defer s.writeMu.Unlock()
	if _, err := s.conn.Write(reply); err != nil {
		// The connection is gone: stop reading too.
		s.lostOnce.Do(func() {
			s.log.Printf("write reply: %v", err)
			s.conn.Close()
		})
	}
}
