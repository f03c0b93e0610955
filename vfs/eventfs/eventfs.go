// Package eventfs is a vfs.FileSystem whose files live on the other side of
// a request/response event channel: in the addon, a mount's
// SandboxFileSystem in JavaScript, reached through the boot request's kept
// handler (src/mount-events.ts is the other side). It defines the encoding
// of those events and checks every answer before vfs sees it: whatever the
// JavaScript filesystem answers, the guest gets a well-formed reply or an
// errno, never a panic or a read longer than it asked for.
//
// # Encoding
//
// One "fs" event per operation. Its payload is a u32 big-endian length,
// that many bytes of JSON ({mount, op, path, offset, length, size, to,
// target, name, flags, abortId}, zero values omitted), then the operation's
// raw data (write contents, xattr values). Answers:
//
//	stat, createFile, truncate   JSON {type, sizeBytes, modifiedAtMs, writable}
//	list                         JSON [{name, type}]
//	read, getxattr, readlink     raw bytes
//	write                        JSON count of bytes written
//	listxattr                    JSON [name]
//	everything else              nothing
//
// type is "file", "directory" or "symlink". A failed operation rejects with
// an Error whose `code` is the errno name the guest sees (ENOENT, ...); any
// other failure, and any malformed answer, is EIO with the reason kept for
// vfs's log.
//
// "fs-abort" {abortId} tells JavaScript the guest gave up on a read
// (FUSE_INTERRUPT), so it can abort that read's AbortSignal. Ids are unique
// in the process, so one handler can serve every mount of a boot.
//
// # Names
//
// JavaScript strings cannot hold arbitrary bytes: JSON would turn every
// invalid UTF-8 sequence into U+FFFD, so names the guest tells apart would
// reach the filesystem as one. A path or name that is not UTF-8 is refused
// with EILSEQ before any event is sent.
package eventfs

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"sync/atomic"
	"syscall"
	"time"
	"unicode/utf8"

	"golang.org/x/sys/unix"

	"github.com/torkbot/sandbox/native/protocol"
	"github.com/torkbot/sandbox/vfs"
)

// FileSystem is a read-only mount: the JavaScript object is a
// SandboxFileSystem. Safe for concurrent use if its Caller is.
type FileSystem struct {
	c     protocol.Caller
	mount int
}

// PosixFileSystem is a mount whose JavaScript object implements
// SandboxPosixFileSystem.
type PosixFileSystem struct{ FileSystem }

var (
	_ vfs.FileSystem      = (*FileSystem)(nil)
	_ vfs.PosixFileSystem = (*PosixFileSystem)(nil)
)

// New returns the read-only filesystem of mount number mount (its index in
// the boot request) that c reaches.
func New(c protocol.Caller, mount int) *FileSystem { return &FileSystem{c: c, mount: mount} }

// NewPosix returns the writable filesystem of mount number mount.
func NewPosix(c protocol.Caller, mount int) *PosixFileSystem {
	return &PosixFileSystem{FileSystem{c: c, mount: mount}}
}

// request is the JSON head of an "fs" event.
type request struct {
	Mount   int    `json:"mount"`
	Op      string `json:"op"`
	Path    string `json:"path"`
	Offset  int64  `json:"offset,omitempty"`
	Length  int    `json:"length,omitempty"`
	Size    int64  `json:"size,omitempty"`
	To      string `json:"to,omitempty"`
	Target  string `json:"target,omitempty"`
	Name    string `json:"name,omitempty"`
	Flags   uint32 `json:"flags,omitempty"`
	AbortID uint64 `json:"abortId,omitempty"`
}

var nextAbortID atomic.Uint64

func (f *FileSystem) call(ctx context.Context, req request, data []byte) ([]byte, error) {
	for _, name := range [...]string{req.Path, req.To, req.Target, req.Name} {
		if !utf8.ValidString(name) {
			return nil, syscall.EILSEQ
		}
	}
	req.Mount = f.mount
	head, err := json.Marshal(req)
	if err != nil {
		return nil, &Error{err}
	}
	payload := make([]byte, 4, 4+len(head)+len(data))
	binary.BigEndian.PutUint32(payload, uint32(len(head)))
	payload = append(append(payload, head...), data...)
	out, err := f.c.Call(ctx, protocol.EventFS, payload)
	if err != nil {
		return nil, guestError(err)
	}
	return out, nil
}

// errnoByName maps errno names (as src/mount-events.ts sends them) to
// numbers; unix.ErrnoName knows the names of the platform the addon runs on.
var errnoByName = func() map[string]syscall.Errno {
	m := map[string]syscall.Errno{}
	for e := syscall.Errno(1); e < 200; e++ {
		if name := unix.ErrnoName(e); name != "" {
			m[name] = e
		}
	}
	return m
}()

// guestError turns a failed call into what vfs answers the guest: the
// errno the JavaScript side named, else EIO with the reason kept.
func guestError(err error) error {
	var js *protocol.JSError
	if errors.As(err, &js) {
		if e, ok := errnoByName[js.Code]; ok && js.Code != "EIO" {
			return e
		}
	}
	return &Error{err}
}

// Error is an operation that failed for a reason that is not an errno: the
// guest sees EIO and vfs logs the reason.
type Error struct{ Err error }

func (e *Error) Error() string        { return e.Err.Error() }
func (e *Error) Unwrap() error        { return e.Err }
func (e *Error) Errno() syscall.Errno { return syscall.EIO }

func badAnswer(format string, args ...any) error { return &Error{fmt.Errorf(format, args...)} }

// jsStat is the JSON answer of stat, createFile and truncate.
type jsStat struct {
	Type         string   `json:"type"`
	SizeBytes    *int64   `json:"sizeBytes"`
	ModifiedAtMs *float64 `json:"modifiedAtMs"`
	Writable     *bool    `json:"writable"`
}

func fileType(t string) (vfs.FileType, error) {
	switch t {
	case "file":
		return vfs.File, nil
	case "directory":
		return vfs.Directory, nil
	case "symlink":
		return vfs.Symlink, nil
	}
	return 0, badAnswer("filesystem reported file type %.40q (want file, directory or symlink)", t)
}

func (f *FileSystem) stat(ctx context.Context, req request) (vfs.Stat, error) {
	out, err := f.call(ctx, req, nil)
	if err != nil {
		return vfs.Stat{}, err
	}
	var js jsStat
	if err := json.Unmarshal(out, &js); err != nil {
		return vfs.Stat{}, badAnswer("%s %s: filesystem answered %.100q: %w", req.Op, req.Path, out, err)
	}
	t, err := fileType(js.Type)
	if err != nil {
		return vfs.Stat{}, err
	}
	// A stat without `writable` is read-only to the guest's eyes (0444
	// files, 0555 directories), as 0.6.0 showed it; fs.memory says
	// writable: true.
	st := vfs.Stat{Type: t, Writable: js.Writable != nil && *js.Writable}
	if js.SizeBytes != nil && *js.SizeBytes >= 0 {
		st.Size = *js.SizeBytes
	}
	if js.ModifiedAtMs != nil {
		st.ModTime = time.UnixMilli(int64(*js.ModifiedAtMs))
	}
	return st, nil
}

func (f *FileSystem) Stat(ctx context.Context, path string) (vfs.Stat, error) {
	return f.stat(ctx, request{Op: "stat", Path: path})
}

func (f *FileSystem) List(ctx context.Context, path string) ([]vfs.DirEntry, error) {
	out, err := f.call(ctx, request{Op: "list", Path: path}, nil)
	if err != nil {
		return nil, err
	}
	var js []struct{ Name, Type string }
	if err := json.Unmarshal(out, &js); err != nil {
		return nil, badAnswer("list %s: filesystem answered %.100q: %w", path, out, err)
	}
	entries := make([]vfs.DirEntry, 0, len(js))
	for _, e := range js {
		t, err := fileType(e.Type)
		if err != nil {
			return nil, err
		}
		entries = append(entries, vfs.DirEntry{Name: e.Name, Type: t})
	}
	return entries, nil
}

// Read sends an "fs-abort" for the read when ctx ends first: the guest
// interrupted it.
func (f *FileSystem) Read(ctx context.Context, path string, offset int64, length int) ([]byte, error) {
	id := nextAbortID.Add(1)
	stop := context.AfterFunc(ctx, func() {
		payload, _ := json.Marshal(map[string]uint64{"abortId": id})
		f.c.Call(context.Background(), protocol.EventFSAbort, payload)
	})
	out, err := f.call(ctx, request{Op: "read", Path: path, Offset: offset, Length: length, AbortID: id}, nil)
	// The call returns as soon as ctx ends, maybe before the abort has
	// started: stopping it then would leave JavaScript's read running.
	if ctx.Err() == nil {
		stop()
	}
	if err == nil && len(out) > length {
		return nil, badAnswer("read %s: filesystem returned %d bytes for a read of %d", path, len(out), length)
	}
	return out, err
}

func (f *PosixFileSystem) CreateFile(ctx context.Context, path string) (vfs.Stat, error) {
	return f.stat(ctx, request{Op: "createFile", Path: path})
}

func (f *PosixFileSystem) Write(ctx context.Context, path string, offset int64, data []byte) (int, error) {
	out, err := f.call(ctx, request{Op: "write", Path: path, Offset: offset}, data)
	if err != nil {
		return 0, err
	}
	var n int
	if err := json.Unmarshal(out, &n); err != nil || n < 0 || n > len(data) {
		return 0, badAnswer("write %s: filesystem answered %.100q for %d bytes", path, out, len(data))
	}
	return n, nil
}

func (f *PosixFileSystem) Truncate(ctx context.Context, path string, size int64) (vfs.Stat, error) {
	return f.stat(ctx, request{Op: "truncate", Path: path, Size: size})
}

// simple runs an operation whose answer carries nothing.
func (f *PosixFileSystem) simple(ctx context.Context, req request, data []byte) error {
	_, err := f.call(ctx, req, data)
	return err
}

func (f *PosixFileSystem) Mkdir(ctx context.Context, path string) error {
	return f.simple(ctx, request{Op: "mkdir", Path: path}, nil)
}

func (f *PosixFileSystem) Unlink(ctx context.Context, path string) error {
	return f.simple(ctx, request{Op: "unlink", Path: path}, nil)
}

func (f *PosixFileSystem) Rmdir(ctx context.Context, path string) error {
	return f.simple(ctx, request{Op: "rmdir", Path: path}, nil)
}

func (f *PosixFileSystem) Rename(ctx context.Context, from, to string, flags uint32) error {
	return f.simple(ctx, request{Op: "rename", Path: from, To: to, Flags: flags}, nil)
}

func (f *PosixFileSystem) Link(ctx context.Context, from, to string) error {
	return f.simple(ctx, request{Op: "link", Path: from, To: to}, nil)
}

func (f *PosixFileSystem) Symlink(ctx context.Context, target, path string) error {
	return f.simple(ctx, request{Op: "symlink", Path: path, Target: target}, nil)
}

func (f *PosixFileSystem) Readlink(ctx context.Context, path string) (string, error) {
	out, err := f.call(ctx, request{Op: "readlink", Path: path}, nil)
	return string(out), err
}

func (f *PosixFileSystem) Setxattr(ctx context.Context, path, name string, value []byte, flags uint32) error {
	return f.simple(ctx, request{Op: "setxattr", Path: path, Name: name, Flags: flags}, value)
}

func (f *PosixFileSystem) Getxattr(ctx context.Context, path, name string) ([]byte, error) {
	return f.call(ctx, request{Op: "getxattr", Path: path, Name: name}, nil)
}

func (f *PosixFileSystem) Listxattr(ctx context.Context, path string) ([]string, error) {
	out, err := f.call(ctx, request{Op: "listxattr", Path: path}, nil)
	if err != nil {
		return nil, err
	}
	var names []string
	if err := json.Unmarshal(out, &names); err != nil {
		return nil, badAnswer("listxattr %s: filesystem answered %.100q: %w", path, out, err)
	}
	return names, nil
}

func (f *PosixFileSystem) Removexattr(ctx context.Context, path, name string) error {
	return f.simple(ctx, request{Op: "removexattr", Path: path, Name: name}, nil)
}
