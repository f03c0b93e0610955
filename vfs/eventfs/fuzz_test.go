package eventfs_test

import (
	"context"
	"errors"
	"syscall"
	"testing"

	"github.com/torkbot/sandbox/native/protocol"
	"github.com/torkbot/sandbox/vfs"
	"github.com/torkbot/sandbox/vfs/eventfs"
)

// replying answers every event with answer, or rejects with code when fail.
type replying struct {
	answer []byte
	fail   bool
	code   string
}

func (r replying) Call(context.Context, string, []byte) ([]byte, error) {
	if r.fail {
		return nil, &protocol.JSError{Code: r.code, Message: "failed"}
	}
	return r.answer, nil
}

// FuzzAnswers: whatever the JavaScript filesystem answers or rejects with,
// every decoder returns a value vfs can use or an error carrying an errno
// the kernel accepts, and never panics.
func FuzzAnswers(f *testing.F) {
	for _, seed := range []string{
		`{"type":"file","sizeBytes":5,"modifiedAtMs":1.5e12,"writable":true}`,
		`{"type":"symlink","sizeBytes":-1,"modifiedAtMs":1e300}`,
		`[{"name":"a","type":"directory"},{"name":"","type":"file"}]`,
		`["user.a","trusted.b"]`, `7`, `-1`, `1e9`, `null`, `"x"`, "\x00\xff",
	} {
		for op := range uint8(8) {
			f.Add(op, []byte(seed), false, "")
		}
	}
	f.Add(uint8(0), []byte(nil), true, "ENOENT")
	f.Add(uint8(0), []byte(nil), true, "EIO")
	f.Add(uint8(0), []byte(nil), true, "E2BIG")
	f.Add(uint8(0), []byte(nil), true, "")
	f.Fuzz(func(t *testing.T, op uint8, answer []byte, fail bool, code string) {
		ctx := context.Background()
		fs := eventfs.NewPosix(replying{answer, fail, code}, 0)
		data := []byte("four")
		var err error
		switch op % 8 {
		case 0:
			var st vfs.Stat
			st, err = fs.Stat(ctx, "/p")
			if err == nil {
				checkStat(t, st)
			}
		case 1:
			var st vfs.Stat
			st, err = fs.Truncate(ctx, "/p", 3)
			if err == nil {
				checkStat(t, st)
			}
		case 2:
			var entries []vfs.DirEntry
			entries, err = fs.List(ctx, "/p")
			for _, e := range entries {
				if e.Type != vfs.File && e.Type != vfs.Directory && e.Type != vfs.Symlink {
					t.Fatalf("list entry of type %v", e.Type)
				}
			}
		case 3:
			var b []byte
			b, err = fs.Read(ctx, "/p", 0, 16)
			if len(b) > 16 {
				t.Fatalf("read of 16 returned %d bytes", len(b))
			}
		case 4:
			var n int
			n, err = fs.Write(ctx, "/p", 0, data)
			if n < 0 || n > len(data) {
				t.Fatalf("write of %d returned %d", len(data), n)
			}
		case 5:
			_, err = fs.Listxattr(ctx, "/p")
		case 6:
			_, err = fs.Getxattr(ctx, "/p", "user.x")
		case 7:
			_, err = fs.Readlink(ctx, "/p")
		}
		if err == nil {
			if fail {
				t.Fatal("a rejected call succeeded")
			}
			return
		}
		// vfs answers a syscall.Errno as it is and an *eventfs.Error as EIO.
		var errno syscall.Errno
		if errors.As(err, &errno) {
			if errno == 0 || errno >= 512 {
				t.Fatalf("errno %d: a FUSE reply cannot carry it", errno)
			}
		} else if !errors.As(err, new(*eventfs.Error)) {
			t.Fatalf("error %v (%T) is neither an errno nor an *eventfs.Error", err, err)
		}
	})
}

func checkStat(t *testing.T, st vfs.Stat) {
	if st.Type != vfs.File && st.Type != vfs.Directory && st.Type != vfs.Symlink {
		t.Fatalf("stat of type %v", st.Type)
	}
	if st.Size < 0 {
		t.Fatalf("stat of size %d", st.Size)
	}
}
