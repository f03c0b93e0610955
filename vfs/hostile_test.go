package vfs_test

import (
	"context"
	"encoding/binary"
	"fmt"
	"io"
	"runtime"
	"strings"
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

// ask sends one request and waits for its reply (the guest sends one at a
// time); it returns the errno and the reply's body.
func (c *guestConn) ask(t *testing.T, f []byte) (syscall.Errno, []byte) {
	t.Helper()
	if !c.Send(f) {
		t.Fatal("Serve stopped reading")
	}
	select {
	case r := <-c.replies:
		if u, _ := reply(r); u != binary.NativeEndian.Uint64(f[8:]) {
			t.Fatalf("reply to %d, want %d", u, binary.NativeEndian.Uint64(f[8:]))
		}
		_, errno := reply(r)
		return errno, r[16:]
	case <-time.After(10 * time.Second):
		t.Fatal("no reply within 10 s")
	}
	return 0, nil
}

// A guest that makes a symlink and then uses its node as a directory or a
// file (what the kernel never does: it resolves symlinks itself) is
// refused before the backend sees a path through the symlink. A backend
// over a host directory that followed "/l/x" or read "/l" would otherwise
// reach whatever l points to on the host.
func TestSymlinkNodesAreNotFollowed(t *testing.T) {
	var mu sync.Mutex
	var seen []string // op path, of every backend call
	fsys := vfstest.Hooked{FS: fuzzFS(), Before: func(ctx context.Context, op, path string) error {
		mu.Lock()
		defer mu.Unlock()
		seen = append(seen, op+" "+path)
		return nil
	}}
	conn := newGuestConn()
	served := make(chan error, 1)
	go func() { served <- vfs.Serve(context.Background(), conn, fsys, vfs.Options{}) }()
	defer func() {
		conn.w.Close()
		if err := <-served; err != nil {
			t.Errorf("Serve = %v", err)
		}
	}()

	unique := uint64(0)
	ask := func(op uint32, node uint64, body ...any) (syscall.Errno, []byte) {
		unique++
		return conn.ask(t, frame(op, unique, node, body...))
	}
	// node asks for a request that hands out a node, and returns its id.
	node := func(what string, op uint32, parent uint64, body ...any) uint64 {
		errno, out := ask(op, parent, body...)
		if errno != 0 || len(out) < 8 {
			t.Fatalf("%s: %v", what, errno)
		}
		return binary.NativeEndian.Uint64(out) // fuse_entry_out.nodeid
	}
	ask(opInit, 0, initFrame(0)[40:])
	l := node("SYMLINK l", opSymlink, 1, "l", "/etc")
	if again := node("LOOKUP l", opLookup, 1, "l"); again != l {
		t.Fatalf("LOOKUP l = node %d, SYMLINK made %d", again, l)
	}
	a := node("LOOKUP a", opLookup, 1, "a")

	for _, c := range []struct {
		what string
		op   uint32
		node uint64
		body []any
		want syscall.Errno
	}{
		{"LOOKUP l/passwd", opLookup, l, []any{"passwd"}, syscall.ENOTDIR},
		{"CREATE l/x", opCreate, l, []any{u32(0o101), u32(0o644), u32(0o022), u32(0), "x"}, syscall.ENOTDIR},
		{"MKDIR l/x", opMkdir, l, []any{u32(0o755), u32(0o022), "x"}, syscall.ENOTDIR},
		{"SYMLINK l/x", opSymlink, l, []any{"x", "/"}, syscall.ENOTDIR},
		{"UNLINK l/x", opUnlink, l, []any{"x"}, syscall.ENOTDIR},
		{"RENAME a to l/x", opRename, 1, []any{u64(l), "a", "x"}, syscall.ENOTDIR},
		{"OPENDIR l", opOpendir, l, []any{u32(0), u32(0)}, syscall.ENOTDIR},
		{"OPEN l", opOpen, l, []any{u32(2), u32(0)}, syscall.ELOOP},
		{"READ l", opRead, l, readIn(0, 0, 4096), syscall.ELOOP},
		{"WRITE l", opWrite, l, append(readIn(0, 0, 5), []byte("owned")), syscall.ELOOP},
		{"truncate l", opSetattr, l, setattrIn(1<<3, 0), syscall.ELOOP},
		{"LOOKUP a/x", opLookup, a, []any{"x"}, syscall.ENOTDIR},
		{"OPENDIR a", opOpendir, a, []any{u32(0), u32(0)}, syscall.ENOTDIR},
		{"READLINK a", opReadlink, a, nil, syscall.EINVAL},
		{"READ /", opRead, 1, readIn(0, 0, 4096), syscall.EISDIR},
		{"READLINK l", opReadlink, l, nil, 0},
		{"READ a", opRead, a, readIn(0, 0, 4096), 0},
	} {
		if errno, _ := ask(c.op, c.node, c.body...); errno != c.want {
			t.Errorf("%s: errno %v, want %v", c.what, errno, c.want)
		}
	}
	mu.Lock()
	defer mu.Unlock()
	for _, call := range seen {
		switch {
		case strings.Contains(call, "/l/") || strings.Contains(call, "/a/"),
			strings.HasPrefix(call, "read /l"), strings.HasPrefix(call, "write /l"), strings.HasPrefix(call, "truncate /l"):
			t.Errorf("the backend was asked to %s", call)
		}
	}
}
