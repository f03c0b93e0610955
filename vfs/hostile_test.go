package vfs_test

import (
	"context"
	"encoding/binary"
	"fmt"
	"io"
	"runtime"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/torkbot/sandbox/vfs"
	"github.com/torkbot/sandbox/vfs/vfstest"
)

// guestConn is Serve's side of a channel to a guest that the test drives
// frame by frame: Send writes a request, Replies delivers Serve's replies
// (one per Write) without ever blocking Serve.
type guestConn struct {
	r       *io.PipeReader
	w       *io.PipeWriter
	replies chan []byte
}

func newGuestConn() *guestConn {
	r, w := io.Pipe()
	return &guestConn{r: r, w: w, replies: make(chan []byte, 1<<16)}
}

func (c *guestConn) Read(b []byte) (int, error) { return c.r.Read(b) }
func (c *guestConn) Close() error               { return c.r.Close() }

func (c *guestConn) Write(b []byte) (int, error) {
	c.replies <- append([]byte(nil), b...)
	return len(b), nil
}

// Send writes one request as the guest; false once Serve stopped reading.
func (c *guestConn) Send(f []byte) bool {
	_, err := c.w.Write(f)
	return err == nil
}

// reply is a decoded reply header.
func reply(r []byte) (unique uint64, errno syscall.Errno) {
	return binary.NativeEndian.Uint64(r[8:]), syscall.Errno(-int32(binary.NativeEndian.Uint32(r[4:])))
}

// A guest that interrupts every request it sends must not get more than
// MaxInFlight backend calls running at once: the interrupt answers the
// request at once, but the backend call (here one that ignores its ctx)
// goes on.
func TestInterruptsKeepBackendCallsBounded(t *testing.T) {
	const limit, requests = 64, 2000
	var running, most atomic.Int64
	release := make(chan struct{})
	var releaseOnce sync.Once
	defer releaseOnce.Do(func() { close(release) })
	fsys := vfstest.Hooked{FS: fuzzFS(), Before: func(ctx context.Context, op, path string) error {
		if op != "stat" || path == "/" {
			return nil
		}
		n := running.Add(1)
		defer running.Add(-1)
		for m := most.Load(); n > m && !most.CompareAndSwap(m, n); m = most.Load() {
		}
		<-release
		return nil
	}}

	conn := newGuestConn()
	baseGoroutines := runtime.NumGoroutine()
	served := make(chan error, 1)
	go func() {
		served <- vfs.Serve(context.Background(), conn, fsys, vfs.Options{MaxInFlight: limit, CallTimeout: time.Minute})
	}()
	conn.Send(initFrame(1))
	<-conn.replies

	// The guest keeps up to limit/2 LOOKUPs outstanding, interrupts each
	// as soon as it is sent, and sends an INTERRUPT again when the server
	// answers EAGAIN (it had not seen the LOOKUP yet), as the kernel does.
	const interruptBase = 1 << 32
	window := make(chan struct{}, limit/2)
	answered := make(chan syscall.Errno, requests)
	go func() {
		done := map[uint64]bool{}
		for r := range conn.replies {
			unique, errno := reply(r)
			if unique >= interruptBase {
				if target := unique - interruptBase; errno == syscall.EAGAIN && !done[target] {
					go conn.Send(frame(opInterrupt, unique, 0, u64(target)))
				}
				continue
			}
			done[unique] = true
			answered <- errno
			<-window
		}
	}()
	for i := range uint64(requests) {
		window <- struct{}{}
		lookup := 2 + i
		conn.Send(frame(opLookup, lookup, 1, fmt.Sprintf("f%d", i)))
		conn.Send(frame(opInterrupt, interruptBase+lookup, 0, u64(lookup)))
	}
	for range requests {
		select {
		case errno := <-answered:
			if errno != syscall.EINTR {
				t.Fatalf("an interrupted LOOKUP answered %v, want EINTR", errno)
			}
		case <-time.After(30 * time.Second):
			t.Fatalf("the LOOKUPs were not all answered; %d backend calls running", running.Load())
		}
	}

	goroutines := runtime.NumGoroutine() - baseGoroutines
	t.Logf("%d LOOKUPs interrupted: at most %d backend calls at once, %d goroutines left",
		requests, most.Load(), goroutines)
	if m := most.Load(); m > limit {
		t.Errorf("%d backend calls ran at once, MaxInFlight is %d", m, limit)
	}
	if goroutines > 2*limit+16 {
		t.Errorf("%d goroutines left for %d backend calls", goroutines, limit)
	}
	releaseOnce.Do(func() { close(release) })
	conn.w.Close()
	select {
	case err := <-served:
		if err != nil {
			t.Fatalf("Serve = %v", err)
		}
		close(conn.replies) // Serve writes no more
	case <-time.After(30 * time.Second):
		t.Fatal("Serve did not return after the backend was released")
	}
}
