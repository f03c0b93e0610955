package vfs_test

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/torkbot/sandbox/vfs"
	"github.com/torkbot/sandbox/vfs/vfstest"
)

// FUSE opcodes (linux/fuse.h).
const (
	opLookup      = 1
	opForget      = 2
	opGetattr     = 3
	opSetattr     = 4
	opReadlink    = 5
	opSymlink     = 6
	opMknod       = 8
	opMkdir       = 9
	opUnlink      = 10
	opRmdir       = 11
	opRename      = 12
	opLink        = 13
	opOpen        = 14
	opRead        = 15
	opWrite       = 16
	opStatfs      = 17
	opRelease     = 18
	opSetxattr    = 21
	opGetxattr    = 22
	opListxattr   = 23
	opRemovexattr = 24
	opFlush       = 25
	opInit        = 26
	opOpendir     = 27
	opReaddir     = 28
	opReleasedir  = 29
	opAccess      = 34
	opCreate      = 35
	opInterrupt   = 36
	opDestroy     = 38
	opIoctl       = 39
	opBatchForget = 42
	opFallocate   = 43
	opReaddirplus = 44
	opRename2     = 45
	opLseek       = 46
)

// frame builds one request as the Linux kernel lays it out: a
// fuse_in_header, then body, whose items are uint32, uint64, string
// (written NUL-terminated, as names are) or []byte (written as is).
func frame(op uint32, unique, node uint64, body ...any) []byte {
	var b []byte
	for _, item := range body {
		switch v := item.(type) {
		case uint32:
			b = binary.NativeEndian.AppendUint32(b, v)
		case uint64:
			b = binary.NativeEndian.AppendUint64(b, v)
		case string:
			b = append(append(b, v...), 0)
		case []byte:
			b = append(b, v...)
		default:
			panic(fmt.Sprintf("frame: %T", item))
		}
	}
	h := make([]byte, 40, 40+len(b))
	binary.NativeEndian.PutUint32(h[0:], uint32(40+len(b)))
	binary.NativeEndian.PutUint32(h[4:], op)
	binary.NativeEndian.PutUint64(h[8:], unique)
	binary.NativeEndian.PutUint64(h[16:], node)
	// uid 0, gid 0, pid 1234, total_extlen 0.
	binary.NativeEndian.PutUint32(h[32:], 1234)
	return append(h, b...)
}

func u32(v uint32) uint32 { return v }
func u64(v uint64) uint64 { return v }

// initFrame is the INIT a 6.x kernel sends: protocol 7.41, every flag
// (FUSE_INIT_EXT set, so flags2 counts).
func initFrame(unique uint64) []byte {
	body := []any{u32(7), u32(41), u32(128 << 10), u32(0xffffffff), u32(0xffffffff)}
	for range 11 {
		body = append(body, u32(0))
	}
	return frame(opInit, unique, 0, body...)
}

func readIn(fh, off uint64, size uint32) []any {
	return []any{fh, off, size, u32(0), u64(0), u32(0), u32(0)}
}

func setattrIn(valid uint32, size uint64) []any {
	return []any{valid, u32(0), u64(0), size, u64(0), u64(0), u64(0), u64(0),
		u32(0), u32(0), u32(0), u32(0o644), u32(0), u32(0), u32(0), u32(0)}
}

func concat(frames ...[]byte) []byte {
	var b []byte
	for _, f := range frames {
		b = append(b, f...)
	}
	return b
}

// session is a plausible guest session against fuzzFS. Served one request
// at a time, the node table hands out ids in order: 2 "a", 3 "d", 4 "d/b",
// 5 "new" (renamed to "d/moved", then "back"), 6 "sub", 7 "sym", 8 "hard".
func session() []byte {
	return concat(
		initFrame(1),
		frame(opLookup, 2, 1, "a"),
		frame(opLookup, 3, 1, "d"),
		frame(opLookup, 4, 3, "b"),
		frame(opGetattr, 5, 2, u32(0), u32(0), u64(0)),
		frame(opOpen, 6, 2, u32(2), u32(0)),
		frame(opRead, 7, 2, readIn(0, 0, 4096)...),
		frame(opWrite, 8, 2, append(readIn(0, 3, 5), []byte("world"))...),
		frame(opCreate, 9, 1, u32(0o101), u32(0o644), u32(0o022), u32(0), "new"),
		frame(opMkdir, 10, 1, u32(0o755), u32(0o022), "sub"),
		frame(opRename2, 11, 1, u64(3), u32(1), u32(0), "new", "moved"),
		frame(opRename, 12, 3, u64(1), "moved", "back"),
		frame(opSetxattr, 13, 2, u32(4), u32(0), "user.x", []byte("blue")),
		frame(opGetxattr, 14, 2, u32(0), u32(0), "user.x"),
		frame(opGetxattr, 15, 2, u32(64), u32(0), "user.x"),
		frame(opListxattr, 16, 2, u32(64), u32(0)),
		frame(opRemovexattr, 17, 2, "user.x"),
		frame(opOpendir, 18, 1, u32(0), u32(0)),
		frame(opReaddir, 19, 1, readIn(1, 0, 4096)...),
		frame(opReaddirplus, 20, 1, readIn(1, 2, 4096)...),
		frame(opReleasedir, 21, 1, u64(1), u32(0), u32(0), u64(0)),
		frame(opSymlink, 22, 1, "sym", "a"),
		frame(opReadlink, 23, 7),
		frame(opLink, 24, 1, u64(2), "hard"),
		frame(opSetattr, 25, 2, setattrIn(1<<3, 2)...),
		frame(opAccess, 26, 2, u32(2), u32(0)),
		frame(opStatfs, 27, 1),
		frame(opFlush, 28, 2, u64(0), u32(0), u32(0), u64(0)),
		frame(opRelease, 29, 2, u64(0), u32(0), u32(0), u64(0)),
		frame(opUnlink, 30, 1, "hard"),
		frame(opRmdir, 31, 1, "sub"),
		frame(opMknod, 32, 1, u32(0o100644), u32(0), u32(0o022), u32(0), "node"),
		frame(opInterrupt, 33, 0, u64(19)),
		frame(opForget, 34, 4, u64(1)),
		frame(opBatchForget, 35, 0, u32(2), u32(0), u64(2), u64(1), u64(3), u64(1)),
		frame(opGetattr, 36, 4, u32(0), u32(0), u64(0)),
		frame(opDestroy, 37, 0),
	)
}

// fuzzSeeds are valid sessions and the ways a hostile guest bends them.
func fuzzSeeds() [][]byte {
	valid := session()
	seeds := [][]byte{
		valid,
		initFrame(1),
		nil,
		// Cut anywhere: inside a header, inside a body.
		valid[:20],
		valid[:len(initFrame(1))+45],
		valid[:len(valid)-3],
		// Before INIT, and INIT twice.
		frame(opLookup, 1, 1, "a"),
		concat(initFrame(1), initFrame(2), frame(opGetattr, 3, 1, u32(0), u32(0), u64(0))),
		// Lengths: below the header, beyond any limit, the maximum.
		concat(initFrame(1), []byte{39, 0, 0, 0, opLookup, 0, 0, 0}, make([]byte, 32)),
		concat(initFrame(1), []byte{0xff, 0xff, 0xff, 0xff, opWrite, 0, 0, 0}, make([]byte, 64)),
		concat(initFrame(1), []byte{0, 0, 0x20, 0, opWrite, 0, 0, 0}, make([]byte, 64)),
		// Bodies too short for their operation's struct.
		concat(initFrame(1), frame(opRead, 2, 1, u32(7)), frame(opSetattr, 3, 1), frame(opRename2, 4, 1, u64(1))),
		// Names: missing NUL, hostile, too long, absent second name.
		concat(initFrame(1),
			frame(opLookup, 2, 1, []byte("noterminator")),
			frame(opLookup, 3, 1, ".."),
			frame(opLookup, 4, 1, "a/../../etc"),
			frame(opMkdir, 5, 1, u32(0o755), u32(0), string(make([]byte, 300))),
			frame(opRename2, 6, 1, u64(1), u32(0), u32(0), "a"),
			frame(opSymlink, 7, 1, "s", string(make([]byte, 5000))),
			frame(opSetxattr, 8, 1, u32(1<<30), u32(0), "user.x", []byte("v")),
		),
		// Sizes: a READ of 4 GiB, GETXATTR asking for 4 GiB, a WRITE whose
		// size field disagrees with its data, offsets past MaxInt64.
		concat(initFrame(1),
			frame(opLookup, 2, 1, "a"),
			frame(opRead, 3, 2, readIn(0, 1<<63, 0xffffffff)...),
			frame(opGetxattr, 4, 2, u32(0xffffffff), u32(0), "user.x"),
			frame(opListxattr, 5, 2, u32(0xffffffff), u32(0)),
			frame(opWrite, 6, 2, append(readIn(0, 1<<63+5, 1<<20), []byte("short"))...),
			frame(opSetattr, 7, 2, setattrIn(1<<3, 1<<63+1)...),
			frame(opReaddir, 8, 1, readIn(0, 1<<62, 0xffffffff)...),
		),
		// Unknown nodes, forgetting what was never handed out, interrupts
		// of nothing, and operations vfs does not implement.
		concat(initFrame(1),
			frame(opGetattr, 2, 999, u32(0), u32(0), u64(0)),
			frame(opForget, 3, 1, u64(1<<63)),
			frame(opForget, 4, 12345, u64(1)),
			frame(opBatchForget, 5, 0, u32(1000), u32(0), u64(2), u64(1)),
			frame(opInterrupt, 6, 0, u64(6)),
			frame(opIoctl, 7, 1, u64(0), u32(0), u32(0), u64(0), u32(0), u32(0)),
			frame(opFallocate, 8, 1, u64(0), u64(0), u64(1), u32(0), u32(0)),
			frame(opLseek, 9, 1, u64(0), u64(0), u32(3), u32(0)),
			frame(9999, 10, 1),
		),
		// A request with extensions that claim more than it holds.
		concat(initFrame(1), func() []byte {
			f := frame(opMkdir, 2, 1, u32(0o755), u32(0), "x")
			f[36] = 0xff // total_extlen
			return f
		}()),
	}
	garbage := make([]byte, 256)
	for i := range garbage {
		garbage[i] = byte(i * 37)
	}
	seeds = append(seeds, garbage, concat(initFrame(1), garbage))
	return seeds
}

func fuzzFS() *vfstest.MemFS {
	return vfstest.NewMemFS(map[string]string{"a": "hello", "d/b": "bee"})
}

// FuzzServe feeds arbitrary bytes to Serve as the guest's request stream.
// Serve must not panic, must return (nil at the end of a well-framed
// stream, ErrBadRequest otherwise) without hanging, and every reply it
// writes must be one the relay and the kernel accept: its length field is
// its size, within the relay's buffer; its error is 0 or a negated errno
// below 512 and then comes alone; and it answers a request that was sent.
func FuzzServe(f *testing.F) {
	for _, seed := range fuzzSeeds() {
		f.Add(seed)
	}
	f.Fuzz(func(t *testing.T, stream []byte) {
		checkServe(t, stream, vfs.Options{CallTimeout: 5 * time.Second, MaxInFlight: 8})
	})
}

// replyLimit is the relay's buffer (fuserelay.BufferSize): a longer reply
// breaks the channel.
const replyLimit = 256*4096 + 4096

func checkServe(t *testing.T, stream []byte, opts vfs.Options) {
	conn := newStreamConn(stream)
	done := make(chan error, 1)
	go func() { done <- vfs.Serve(context.Background(), conn, fuzzFS(), opts) }()
	var err error
	select {
	case err = <-done:
	case <-time.After(20 * time.Second):
		t.Fatalf("Serve did not return within 20 s of a %d-byte stream", len(stream))
	}
	if err != nil && !errors.Is(err, vfs.ErrBadRequest) {
		t.Errorf("Serve = %v, want nil or ErrBadRequest", err)
	}

	// What the requests were, framed as Serve frames them.
	sent := map[uint64]int{}
	for rest := stream; len(rest) >= 40; {
		n := binary.NativeEndian.Uint32(rest)
		if n < 40 || uint64(n) > uint64(len(rest)) {
			break
		}
		sent[binary.NativeEndian.Uint64(rest[8:])]++
		rest = rest[n:]
	}
	conn.mu.Lock()
	defer conn.mu.Unlock()
	for i, r := range conn.replies {
		if len(r) < 16 {
			t.Fatalf("reply %d: %d bytes, shorter than a header", i, len(r))
		}
		length := binary.NativeEndian.Uint32(r[0:])
		errno := int32(binary.NativeEndian.Uint32(r[4:]))
		unique := binary.NativeEndian.Uint64(r[8:])
		switch {
		case int(length) != len(r):
			t.Fatalf("reply %d: length field %d, size %d", i, length, len(r))
		case len(r) > replyLimit:
			t.Fatalf("reply %d: %d bytes, beyond the relay's %d", i, len(r), replyLimit)
		case errno > 0 || errno <= -512:
			t.Fatalf("reply %d: error %d, which the kernel refuses", i, errno)
		case errno != 0 && len(r) != 16:
			t.Fatalf("reply %d: error %d with %d bytes; the kernel wants the header alone", i, errno, len(r))
		case sent[unique] == 0:
			t.Fatalf("reply %d: unique %d answers no outstanding request", i, unique)
		}
		sent[unique]--
	}
}

// streamConn is Serve's side of a channel carrying a fixed request stream.
// The stream arrives in pieces of varying size, as a socket delivers it,
// then ends; each Write is recorded as one reply (Serve writes a reply per
// call).
type streamConn struct {
	r *io.PipeReader

	mu      sync.Mutex
	replies [][]byte
}

func newStreamConn(stream []byte) *streamConn {
	r, w := io.Pipe()
	go func() {
		sizes := []int{1, 39, 4096, 3, 64 << 10, 17}
		for i := 0; len(stream) > 0; i++ {
			n := min(sizes[i%len(sizes)], len(stream))
			if _, err := w.Write(stream[:n]); err != nil {
				return // Serve stopped reading
			}
			stream = stream[n:]
		}
		w.Close()
	}()
	return &streamConn{r: r}
}

func (c *streamConn) Read(b []byte) (int, error) { return c.r.Read(b) }

func (c *streamConn) Write(b []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.replies = append(c.replies, append([]byte(nil), b...))
	return len(b), nil
}

func (c *streamConn) Close() error { return c.r.Close() }

// TestServeSession runs the valid seed session and checks that it is
// answered as a kernel would expect: every request that wants a reply gets
// one, and the writes land in the backend.
func TestServeSession(t *testing.T) {
	stream := session()
	conn := newStreamConn(stream)
	fsys := fuzzFS()
	if err := vfs.Serve(context.Background(), conn, fsys, vfs.Options{MaxInFlight: 1}); err != nil {
		t.Fatalf("Serve = %v", err)
	}
	got := map[uint64]int32{}
	for _, r := range conn.replies {
		u := binary.NativeEndian.Uint64(r[8:])
		if _, dup := got[u]; dup {
			t.Errorf("request %d answered twice", u)
		}
		got[u] = int32(binary.NativeEndian.Uint32(r[4:]))
	}
	// FORGET and BATCH_FORGET have no reply; everything else has one.
	for u := uint64(1); u <= 37; u++ {
		if _, ok := got[u]; ok == (u == 34 || u == 35) {
			t.Errorf("request %d: replied %v", u, ok)
		}
	}
	want := map[uint64]syscall.Errno{
		28: syscall.ENOSYS, // FLUSH: writes are complete, so the kernel stops asking
		33: syscall.EAGAIN, // INTERRUPT of a request already answered
		36: syscall.ESTALE, // GETATTR of "d/b" after the kernel forgot it
	}
	for u := uint64(1); u <= 37; u++ {
		if e, ok := got[u]; ok && e != -int32(want[u]) {
			t.Errorf("request %d: errno %d, want %d", u, -e, want[u])
		}
	}
	if data, err := fsys.Read(context.Background(), "/a", 0, 100); err != nil || string(data) != "he" {
		t.Errorf("/a = %q, %v; want the write, then the truncate to 2", data, err)
	}
	if _, err := fsys.Stat(context.Background(), "/back"); err != nil {
		t.Errorf("/back: %v", err)
	}
	checkServe(t, stream, vfs.Options{})
}
