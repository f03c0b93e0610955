package netpolicy

import (
	"context"
	"errors"
	"net"
	"sync"
	"time"

	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/adapters/gonet"
	"gvisor.dev/gvisor/pkg/waiter"
)

// Writes toward the guest. The netstack queues every Write to a TCP
// endpoint as one segment until the guest acknowledges it, at a cost of
// about 600 bytes per segment whatever its payload, and its send buffer
// counts payload bytes only (1 MiB, auto-tuned up to 4 MiB). A guest that
// stops reading while an upstream trickles one byte per write, or while it
// pipelines DNS queries whose answers are small, therefore made the host
// hold hundreds of bytes per byte, without bound in time. Every TCP
// connection to the guest is written through a guestConn instead:
//
//   - its send buffer is fixed at guestSendBuffer (no auto-tuning);
//   - writes are coalesced in a buffer of coalesceSize: a flusher hands the
//     endpoint what has accumulated at once while fewer than maxShortWrites
//     short writes are unacknowledged, and otherwise waits until the guest
//     acknowledges one or a full buffer has accumulated, so the endpoint
//     queues at most maxShortWrites short segments and the rest in large
//     ones (Nagle's rule, loosened so that a few small writes in a row, as
//     a streamed response makes, do not wait for the guest's delayed ACK);
//   - a writer blocks while the buffer is full, so the upstream is read no
//     faster than the guest reads;
//   - with a write timeout, data the guest has not taken within it ends the
//     connection; without one (a relayed flow, whose guest may pause as
//     long as it likes), a closed connection still gets lingerTimeout to
//     take what is buffered, then is dropped.
const (
	// guestSendBuffer is each guest TCP endpoint's send buffer: about two
	// round trips of a fast virtio link.
	guestSendBuffer = 256 << 10
	// coalesceSize is the coalescing buffer, and the size from which a
	// write goes out without waiting for the guest's acknowledgment.
	coalesceSize = 16 << 10
	// maxShortWrites bounds the writes shorter than coalesceSize that the
	// guest has not acknowledged.
	maxShortWrites = 8
	// pollMin and pollMax bound how often the flusher looks whether the
	// guest acknowledged everything (the netstack signals only a half-empty
	// send buffer).
	pollMin = 200 * time.Microsecond
	pollMax = 50 * time.Millisecond
	// lingerTimeout bounds how long a closed connection keeps its buffers
	// for a guest that does not read them.
	lingerTimeout = 2 * time.Minute
)

// guestConn is a TCP connection to the guest whose writes are coalesced
// (see above). Reads and deadlines are the underlying conn's; Close
// delivers what is buffered first, within the write timeout.
type guestConn struct {
	*gonet.TCPConn
	ep tcpip.Endpoint
	// writeTimeout bounds each flush; 0 means none.
	writeTimeout time.Duration

	mu sync.Mutex
	// changed is closed and replaced whenever the state below changes.
	changed chan struct{}
	pending []byte
	// err is the flusher's failure, returned by later writes.
	err error
	// closing: no more writes; the flusher delivers pending, then closes
	// (or half-closes, when halfClose).
	closing, halfClose bool
	// flushed is closed when the flusher has returned.
	flushed chan struct{}
}

var errGuestConnClosed = errors.New("netpolicy: connection to the guest closed")

// newGuestConn wraps the connection of ep and starts its flusher with
// start (the session's tracked goroutine starter). ctx ending aborts the
// connection at once. It returns nil if start refused (shutdown).
func newGuestConn(ctx context.Context, conn *gonet.TCPConn, ep tcpip.Endpoint, writeTimeout time.Duration, start func(func()) bool) *guestConn {
	ep.SocketOptions().SetSendBufferSize(guestSendBuffer, true)
	c := &guestConn{
		TCPConn:      conn,
		ep:           ep,
		writeTimeout: writeTimeout,
		changed:      make(chan struct{}),
		pending:      make([]byte, 0, coalesceSize),
		flushed:      make(chan struct{}),
	}
	if !start(func() { c.flush(ctx) }) {
		return nil
	}
	return c
}

// Precondition: c.mu is held.
func (c *guestConn) signalLocked() {
	close(c.changed)
	c.changed = make(chan struct{})
}

// Write buffers p for the flusher, blocking while the buffer is full.
func (c *guestConn) Write(p []byte) (int, error) {
	written := 0
	c.mu.Lock()
	defer c.mu.Unlock()
	for len(p) > 0 {
		switch {
		case c.err != nil:
			return written, c.err
		case c.closing:
			return written, errGuestConnClosed
		}
		room := cap(c.pending) - len(c.pending)
		if room == 0 {
			changed := c.changed
			c.mu.Unlock()
			<-changed
			c.mu.Lock()
			continue
		}
		n := min(room, len(p))
		c.pending = append(c.pending, p[:n]...)
		p, written = p[n:], written+n
		c.signalLocked()
	}
	return written, nil
}

// CloseWrite delivers what is buffered, then half-closes.
func (c *guestConn) CloseWrite() error { return c.finish(true) }

// Close delivers what is buffered (within the write timeout), then closes.
func (c *guestConn) Close() error { return c.finish(false) }

func (c *guestConn) finish(half bool) error {
	c.mu.Lock()
	if !c.closing {
		c.closing, c.halfClose = true, half
		c.signalLocked()
		if c.writeTimeout == 0 {
			c.TCPConn.SetWriteDeadline(time.Now().Add(lingerTimeout))
		}
	}
	c.mu.Unlock()
	<-c.flushed
	if !half {
		return c.TCPConn.Close() // after a CloseWrite, the full close
	}
	return nil
}

// abort closes the connection at once, dropping what is buffered.
func (c *guestConn) abort() {
	c.mu.Lock()
	if c.err == nil {
		c.err = errGuestConnClosed
	}
	c.signalLocked()
	c.mu.Unlock()
	c.TCPConn.Close()
}

// unackedAtMost reports whether the guest has acknowledged all but at most
// n of the bytes written. The netstack does not tell how many bytes wait
// for an acknowledgment (it has no SendQueueSizeOption), but an endpoint
// is writable exactly while they are fewer than its send buffer: so the
// send buffer is set to n+1 for the question, without the notification
// that would clamp it, and set back. Only the flusher writes, and it is
// not writing meanwhile.
func (c *guestConn) unackedAtMost(n uint64) bool {
	opts := c.ep.SocketOptions()
	opts.SetSendBufferSize(int64(min(n, guestSendBuffer))+1, false)
	writable := c.ep.Readiness(waiter.WritableEvents)&waiter.WritableEvents != 0
	opts.SetSendBufferSize(guestSendBuffer, false)
	return writable
}

// flush is the flusher goroutine (see guestConn).
func (c *guestConn) flush(ctx context.Context) {
	defer close(c.flushed)
	stop := context.AfterFunc(ctx, c.abort)
	defer stop()
	out := make([]byte, 0, coalesceSize)
	poll := pollMin
	// sent counts the bytes handed to the endpoint; shortEnds holds, in
	// order, the value it had after each short write not yet acknowledged.
	var sent uint64
	var shortEnds []uint64
	shortOutstanding := func() int {
		for len(shortEnds) > 0 && c.unackedAtMost(sent-shortEnds[0]) {
			shortEnds = shortEnds[1:]
		}
		return len(shortEnds)
	}
	for {
		c.mu.Lock()
		switch {
		case c.err != nil:
			c.mu.Unlock()
			return
		case len(c.pending) == 0 && c.closing:
			half := c.halfClose
			c.mu.Unlock()
			if half {
				c.TCPConn.CloseWrite()
			} else {
				c.TCPConn.Close()
			}
			return
		case len(c.pending) == 0:
			changed := c.changed
			c.mu.Unlock()
			<-changed
			continue
		case len(c.pending) < cap(c.pending) && !c.closing && shortOutstanding() >= maxShortWrites:
			// Wait for the guest's acknowledgment, or for more data.
			changed := c.changed
			c.mu.Unlock()
			select {
			case <-changed:
			case <-time.After(poll):
				poll = min(2*poll, pollMax)
			}
			continue
		}
		out, c.pending = c.pending, out[:0]
		c.signalLocked()
		c.mu.Unlock()
		poll = pollMin

		if c.writeTimeout > 0 {
			c.TCPConn.SetWriteDeadline(time.Now().Add(c.writeTimeout))
		}
		// An acknowledgment processed during unackedAtMost may have stored
		// the probe's size back.
		c.ep.SocketOptions().SetSendBufferSize(guestSendBuffer, false)
		if _, err := c.TCPConn.Write(out); err != nil {
			c.mu.Lock()
			c.err = err
			c.signalLocked()
			c.mu.Unlock()
			c.TCPConn.Close()
			return
		}
		sent += uint64(len(out))
		if len(out) < coalesceSize {
			shortEnds = append(shortEnds, sent)
		}
	}
}

var _ net.Conn = (*guestConn)(nil)
