package eventfs_test

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/torkbot/sandbox/native/protocol"
	"github.com/torkbot/sandbox/vfs"
	"github.com/torkbot/sandbox/vfs/eventfs"
	"github.com/torkbot/sandbox/vfs/vfstest"
)

// head is an "fs" event's JSON head as src/mount-events.ts reads it.
type head struct {
	Mount   int     `json:"mount"`
	Op      string  `json:"op"`
	Path    string  `json:"path"`
	Offset  *int64  `json:"offset"`
	Length  *int    `json:"length"`
	Size    *int64  `json:"size"`
	To      string  `json:"to"`
	Target  string  `json:"target"`
	Name    string  `json:"name"`
	Flags   uint32  `json:"flags"`
	AbortID *uint64 `json:"abortId"`
}

func decodeEvent(p []byte) (head, []byte, error) {
	if len(p) < 4 || uint64(binary.BigEndian.Uint32(p)) > uint64(len(p)-4) {
		return head{}, nil, fmt.Errorf("fs event %q: no head", p)
	}
	n := binary.BigEndian.Uint32(p)
	var h head
	if err := json.Unmarshal(p[4:4+n], &h); err != nil {
		return head{}, nil, fmt.Errorf("fs event head %q: %v", p[4:4+n], err)
	}
	return h, p[4+n:], nil
}

// jsSide plays src/mount-events.ts over a vfstest.MemFS: it decodes the
// events, runs them and encodes the answers as the JavaScript side does; a
// failure with an errno rejects with that errno's name as the code.
type jsSide struct {
	t  testing.TB
	fs *vfstest.MemFS

	mu     sync.Mutex
	events []head
	aborts []uint64
}

func (j *jsSide) Call(ctx context.Context, event string, p []byte) ([]byte, error) {
	if event == protocol.EventFSAbort {
		var a struct{ AbortID uint64 }
		if err := json.Unmarshal(p, &a); err != nil {
			j.t.Errorf("fs-abort payload %q: %v", p, err)
		}
		j.mu.Lock()
		j.aborts = append(j.aborts, a.AbortID)
		j.mu.Unlock()
		return nil, nil
	}
	if event != protocol.EventFS {
		j.t.Errorf("unexpected event %q", event)
		return nil, nil
	}
	h, data, err := decodeEvent(p)
	if err != nil {
		j.t.Error(err)
		return nil, err
	}
	j.mu.Lock()
	j.events = append(j.events, h)
	j.mu.Unlock()
	out, err := j.run(ctx, h, data)
	var errno syscall.Errno
	if errors.As(err, &errno) {
		return nil, &protocol.JSError{Code: unix.ErrnoName(errno), Message: err.Error()}
	}
	if err != nil {
		return nil, &protocol.JSError{Message: err.Error()}
	}
	return out, nil
}

// or0 is JavaScript's `field ?? 0`.
func or0[T int | int64](v *T) T {
	if v == nil {
		return 0
	}
	return *v
}

func statJSON(st vfs.Stat, err error) ([]byte, error) {
	if err != nil {
		return nil, err
	}
	return json.Marshal(map[string]any{"type": st.Type.String(), "sizeBytes": st.Size, "modifiedAtMs": st.ModTime.UnixMilli(), "writable": st.Writable})
}

func (j *jsSide) run(ctx context.Context, h head, data []byte) ([]byte, error) {
	fs := j.fs
	switch h.Op {
	case "stat":
		return statJSON(fs.Stat(ctx, h.Path))
	case "createFile":
		return statJSON(fs.CreateFile(ctx, h.Path))
	case "truncate":
		return statJSON(fs.Truncate(ctx, h.Path, or0(h.Size)))
	case "list":
		entries, err := fs.List(ctx, h.Path)
		if err != nil {
			return nil, err
		}
		js := []map[string]string{}
		for _, e := range entries {
			js = append(js, map[string]string{"name": e.Name, "type": e.Type.String()})
		}
		return json.Marshal(js)
	case "read":
		if h.AbortID == nil {
			j.t.Errorf("read without abortId")
		}
		return fs.Read(ctx, h.Path, or0(h.Offset), or0(h.Length))
	case "write":
		n, err := fs.Write(ctx, h.Path, or0(h.Offset), data)
		if err != nil {
			return nil, err
		}
		return json.Marshal(n)
	case "mkdir":
		return nil, fs.Mkdir(ctx, h.Path)
	case "unlink":
		return nil, fs.Unlink(ctx, h.Path)
	case "rmdir":
		return nil, fs.Rmdir(ctx, h.Path)
	case "rename":
		return nil, fs.Rename(ctx, h.Path, h.To, h.Flags)
	case "link":
		return nil, fs.Link(ctx, h.Path, h.To)
	case "symlink":
		return nil, fs.Symlink(ctx, h.Target, h.Path)
	case "readlink":
		target, err := fs.Readlink(ctx, h.Path)
		return []byte(target), err
	case "setxattr":
		return nil, fs.Setxattr(ctx, h.Path, h.Name, data, h.Flags)
	case "getxattr":
		return fs.Getxattr(ctx, h.Path, h.Name)
	case "listxattr":
		names, err := fs.Listxattr(ctx, h.Path)
		if err != nil {
			return nil, err
		}
		return json.Marshal(names)
	case "removexattr":
		return nil, fs.Removexattr(ctx, h.Path, h.Name)
	}
	return nil, fmt.Errorf("unknown op %q", h.Op)
}

// must panics (failing the test) on an error; Go passes a call's two
// results only as a function's whole argument list.
func must[T any](v T, err error) T {
	if err != nil {
		panic(err)
	}
	return v
}

func noErr(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

// TestOperationsOverEvents: every operation reaches the JavaScript side
// with its arguments and data, and the answers come back decoded.
func TestOperationsOverEvents(t *testing.T) {
	ctx := context.Background()
	js := &jsSide{t: t, fs: vfstest.NewMemFS(map[string]string{"/a.txt": "hello"})}
	fs := eventfs.NewPosix(js, 3)

	if st := must(fs.Stat(ctx, "/a.txt")); st.Type != vfs.File || st.Size != 5 {
		t.Errorf("stat /a.txt = %+v", st)
	}
	if got := must(fs.Read(ctx, "/a.txt", 1, 3)); string(got) != "ell" {
		t.Errorf("read = %q", got)
	}
	must(fs.CreateFile(ctx, "/b"))
	if n := must(fs.Write(ctx, "/b", 0, []byte("bytes\x00\xff"))); n != 7 {
		t.Errorf("write = %d", n)
	}
	if st := must(fs.Truncate(ctx, "/b", 2)); st.Size != 2 {
		t.Errorf("truncate: %+v", st)
	}
	noErr(t, fs.Mkdir(ctx, "/d"))
	noErr(t, fs.Rename(ctx, "/b", "/d/c", 0))
	noErr(t, fs.Link(ctx, "/d/c", "/d/hard"))
	noErr(t, fs.Symlink(ctx, "c", "/d/l"))
	if target := must(fs.Readlink(ctx, "/d/l")); target != "c" {
		t.Errorf("readlink = %q", target)
	}
	noErr(t, fs.Setxattr(ctx, "/d/c", "user.k", []byte{0, 1, 2}, vfs.XattrCreate))
	if v := must(fs.Getxattr(ctx, "/d/c", "user.k")); !bytes.Equal(v, []byte{0, 1, 2}) {
		t.Errorf("getxattr = %q", v)
	}
	if names := must(fs.Listxattr(ctx, "/d/c")); !slices.Equal(names, []string{"user.k"}) {
		t.Errorf("listxattr = %q", names)
	}
	noErr(t, fs.Removexattr(ctx, "/d/c", "user.k"))
	entries := must(fs.List(ctx, "/d"))
	slices.SortFunc(entries, func(a, b vfs.DirEntry) int { return strings.Compare(a.Name, b.Name) })
	want := []vfs.DirEntry{{Name: "c", Type: vfs.File}, {Name: "hard", Type: vfs.File}, {Name: "l", Type: vfs.Symlink}}
	if !slices.Equal(entries, want) {
		t.Errorf("list /d = %+v, want %+v", entries, want)
	}
	noErr(t, fs.Unlink(ctx, "/d/l"))
	noErr(t, fs.Unlink(ctx, "/d/hard"))
	noErr(t, fs.Unlink(ctx, "/d/c"))
	noErr(t, fs.Rmdir(ctx, "/d"))

	for _, e := range js.events {
		if e.Mount != 3 {
			t.Errorf("%s event for mount %d, want 3", e.Op, e.Mount)
		}
	}
	// Zero values are left out of the head, as the JavaScript side expects.
	if e := js.events[0]; e.Offset != nil || e.Length != nil || e.Size != nil || e.AbortID != nil {
		t.Errorf("stat head carries zero fields: %+v", e)
	}
}

// TestErrors: an errno the JavaScript side names reaches vfs as that errno;
// EIO, an unknown name or no code at all is EIO with the reason kept.
func TestErrors(t *testing.T) {
	ctx := context.Background()
	fs := eventfs.NewPosix(&jsSide{t: t, fs: vfstest.NewMemFS(nil)}, 0)
	for name, err := range map[string]error{
		"stat":   must2(fs.Stat(ctx, "/missing")),
		"mkdir":  fs.Mkdir(ctx, "/missing/sub"),
		"rmdir":  fs.Rmdir(ctx, "/missing"),
		"getxat": must2(fs.Getxattr(ctx, "/", "user.none")),
	} {
		var errno syscall.Errno
		if !errors.As(err, &errno) || errno == syscall.EIO {
			t.Errorf("%s: %v (%T), want the MemFS errno", name, err, err)
		}
	}
	for _, tc := range []struct {
		name string
		err  error
	}{
		{"EIO named", &protocol.JSError{Code: "EIO", Message: "disk on fire"}},
		{"unknown code", &protocol.JSError{Code: "ENOTANERRNO", Message: "custom"}},
		{"no code", &protocol.JSError{Message: "plain Error"}},
		{"not JavaScript's", context.DeadlineExceeded},
	} {
		fs := eventfs.New(failing{tc.err}, 0)
		_, err := fs.Stat(ctx, "/x")
		var e *eventfs.Error
		if !errors.As(err, &e) || e.Errno() != syscall.EIO || !errors.Is(err, tc.err) {
			t.Errorf("%s: %v (%T), want an *eventfs.Error (EIO) wrapping the reason", tc.name, err, err)
		}
	}
}

func must2[T any](_ T, err error) error { return err }

type failing struct{ err error }

func (f failing) Call(context.Context, string, []byte) ([]byte, error) { return nil, f.err }

// answering answers every event with the same bytes.
type answering struct {
	answer []byte
	calls  int
}

func (a *answering) Call(context.Context, string, []byte) ([]byte, error) {
	a.calls++
	return a.answer, nil
}

// TestNamesNotUTF8: a name JavaScript could not hold is refused before any
// event, with EILSEQ.
func TestNamesNotUTF8(t *testing.T) {
	ctx := context.Background()
	c := &answering{}
	fs := eventfs.NewPosix(c, 0)
	bad := "/caf\xe9"
	for name, err := range map[string]error{
		"stat":     must2(fs.Stat(ctx, bad)),
		"rename":   fs.Rename(ctx, "/ok", bad, 0),
		"symlink":  fs.Symlink(ctx, "\xff", "/l"),
		"setxattr": fs.Setxattr(ctx, "/ok", "user.\xfe", nil, 0),
	} {
		if !errors.Is(err, syscall.EILSEQ) {
			t.Errorf("%s: %v, want EILSEQ", name, err)
		}
	}
	if c.calls != 0 {
		t.Errorf("%d events sent for names JavaScript cannot hold", c.calls)
	}
}

// TestBadAnswers: an answer the contract does not allow is EIO naming what
// was wrong, never a value vfs would pass on.
func TestBadAnswers(t *testing.T) {
	ctx := context.Background()
	for _, tc := range []struct {
		name   string
		answer string
		op     func(*eventfs.PosixFileSystem) error
		want   string
	}{
		{"stat not JSON", "nope", func(fs *eventfs.PosixFileSystem) error { return must2(fs.Stat(ctx, "/")) }, "filesystem answered"},
		{"stat fifo", `{"type":"fifo"}`, func(fs *eventfs.PosixFileSystem) error { return must2(fs.Stat(ctx, "/")) }, `file type "fifo"`},
		{"list bad type", `[{"name":"a","type":"socket"}]`, func(fs *eventfs.PosixFileSystem) error { return must2(fs.List(ctx, "/")) }, `file type "socket"`},
		{"list not array", `{}`, func(fs *eventfs.PosixFileSystem) error { return must2(fs.List(ctx, "/")) }, "list /"},
		{"read too long", "12345", func(fs *eventfs.PosixFileSystem) error { return must2(fs.Read(ctx, "/a", 0, 4)) }, "returned 5 bytes for a read of 4"},
		{"write negative", "-1", func(fs *eventfs.PosixFileSystem) error { return must2(fs.Write(ctx, "/a", 0, []byte("ab"))) }, "for 2 bytes"},
		{"write more than sent", "3", func(fs *eventfs.PosixFileSystem) error { return must2(fs.Write(ctx, "/a", 0, []byte("ab"))) }, "for 2 bytes"},
		{"write not a number", `"2"`, func(fs *eventfs.PosixFileSystem) error { return must2(fs.Write(ctx, "/a", 0, []byte("ab"))) }, "for 2 bytes"},
		{"listxattr not names", `[1]`, func(fs *eventfs.PosixFileSystem) error { return must2(fs.Listxattr(ctx, "/a")) }, "listxattr /a"},
	} {
		err := tc.op(eventfs.NewPosix(&answering{answer: []byte(tc.answer)}, 0))
		var e *eventfs.Error
		if !errors.As(err, &e) || e.Errno() != syscall.EIO || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: %v, want EIO saying %q", tc.name, err, tc.want)
		}
	}
	// A stat's optional fields: absent or negative size is 0, absent
	// writable is read-only.
	st, err := eventfs.New(&answering{answer: []byte(`{"type":"directory","sizeBytes":-4}`)}, 0).Stat(ctx, "/")
	if err != nil || st != (vfs.Stat{Type: vfs.Directory}) {
		t.Errorf("minimal stat = %+v, %v", st, err)
	}
}

// blocking holds every read until its context ends, and records aborts.
type blocking struct {
	mu     sync.Mutex
	reads  []uint64
	aborts []uint64
	read   chan struct{}
}

func (b *blocking) Call(ctx context.Context, event string, p []byte) ([]byte, error) {
	if event == protocol.EventFSAbort {
		var a struct{ AbortID uint64 }
		json.Unmarshal(p, &a)
		b.mu.Lock()
		b.aborts = append(b.aborts, a.AbortID)
		b.mu.Unlock()
		return nil, nil
	}
	h, _, err := decodeEvent(p)
	if err != nil || h.AbortID == nil {
		panic(fmt.Sprintf("read event %q: %v", p, err))
	}
	b.mu.Lock()
	b.reads = append(b.reads, *h.AbortID)
	b.mu.Unlock()
	b.read <- struct{}{}
	<-ctx.Done()
	return nil, ctx.Err()
}

// TestReadInterrupted: a read whose context ends (the guest's
// FUSE_INTERRUPT) sends "fs-abort" with that read's id; a read that ends
// normally sends none.
func TestReadInterrupted(t *testing.T) {
	b := &blocking{read: make(chan struct{})}
	fs := eventfs.New(b, 0)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error)
	go func() {
		_, err := fs.Read(ctx, "/slow", 0, 10)
		done <- err
	}()
	<-b.read
	cancel()
	if err := <-done; err == nil {
		t.Fatal("interrupted read succeeded")
	}
	deadline := time.Now().Add(5 * time.Second)
	for {
		b.mu.Lock()
		aborts, reads := slices.Clone(b.aborts), slices.Clone(b.reads)
		b.mu.Unlock()
		if len(aborts) > 0 {
			if !slices.Equal(aborts, reads) {
				t.Fatalf("aborted %v, reads were %v", aborts, reads)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("no fs-abort for the interrupted read")
		}
		time.Sleep(time.Millisecond)
	}

	js := &jsSide{t: t, fs: vfstest.NewMemFS(map[string]string{"/a": "x"})}
	must(eventfs.New(js, 0).Read(context.Background(), "/a", 0, 1))
	if len(js.aborts) != 0 {
		t.Errorf("a finished read sent fs-abort %v", js.aborts)
	}
}

// TestConcurrent: operations from many goroutines (vfs calls each from its
// own) share one Caller; run under -race.
func TestConcurrent(t *testing.T) {
	js := &jsSide{t: t, fs: vfstest.NewMemFS(nil)}
	fs := eventfs.NewPosix(js, 0)
	var wg sync.WaitGroup
	for i := range 16 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			ctx := context.Background()
			p := fmt.Sprintf("/f%d", i)
			if _, err := fs.CreateFile(ctx, p); err != nil {
				t.Error(err)
				return
			}
			if _, err := fs.Write(ctx, p, 0, []byte(p)); err != nil {
				t.Error(err)
			}
			if got, err := fs.Read(ctx, p, 0, 100); err != nil || string(got) != p {
				t.Errorf("read %s = %q, %v", p, got, err)
			}
		}()
	}
	wg.Wait()
	ids := map[uint64]bool{}
	for _, e := range js.events {
		if e.Op == "read" {
			if ids[*e.AbortID] {
				t.Errorf("abort id %d used twice", *e.AbortID)
			}
			ids[*e.AbortID] = true
		}
	}
}
