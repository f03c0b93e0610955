package main

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

	"github.com/torkbot/sandbox/bridge/napi"
	"github.com/torkbot/sandbox/vfs"
)

// jsFileSystem is a mount's SandboxFileSystem, living in JavaScript, seen
// by vfs as a vfs.FileSystem: every operation is one "fs" event on the boot
// request's kept handler (src/mount-events.ts is the other side, and
// documents the encoding).
type jsFileSystem struct {
	cb    *napi.Callback
	mount int
}

// jsPosixFileSystem is a jsFileSystem whose JavaScript object implements
// SandboxPosixFileSystem. A mount that is only a jsFileSystem is read-only.
type jsPosixFileSystem struct{ jsFileSystem }

var (
	_ vfs.FileSystem      = (*jsFileSystem)(nil)
	_ vfs.PosixFileSystem = (*jsPosixFileSystem)(nil)
)

// fsRequest is the JSON head of an "fs" event.
type fsRequest struct {
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

func (f *jsFileSystem) call(ctx context.Context, req fsRequest, data []byte) ([]byte, error) {
	// JavaScript strings cannot hold arbitrary bytes: JSON would turn every
	// invalid UTF-8 sequence into U+FFFD, so names the guest tells apart
	// would reach the filesystem as one. Such names are refused instead.
	for _, name := range [...]string{req.Path, req.To, req.Target, req.Name} {
		if !utf8.ValidString(name) {
			return nil, syscall.EILSEQ
		}
	}
	req.Mount = f.mount
	head, err := json.Marshal(req)
	if err != nil {
		return nil, err
	}
	payload := make([]byte, 4, 4+len(head)+len(data))
	binary.BigEndian.PutUint32(payload, uint32(len(head)))
	payload = append(append(payload, head...), data...)
	out, err := f.cb.Call(ctx, "fs", payload)
	if err != nil {
		return nil, errnoOf(err)
	}
	return out, nil
}

// errnoByName maps errno names (as src/mount-events.ts sends them) to numbers.
var errnoByName = func() map[string]syscall.Errno {
	m := map[string]syscall.Errno{}
	for e := syscall.Errno(1); e < 200; e++ {
		if name := unix.ErrnoName(e); name != "" {
			m[name] = e
		}
	}
	return m
}()

// errnoOf turns a failed JS call into what vfs answers the guest: the errno
// the JavaScript side named, else EIO (with the reason kept for the log).
func errnoOf(err error) error {
	var js *napi.JSError
	if errors.As(err, &js) {
		if e, ok := errnoByName[js.Code]; ok && js.Code != "EIO" {
			return e
		}
	}
	return &fsError{err}
}

// fsError is an operation that failed for a reason that is not an errno:
// the guest sees EIO and vfs logs the reason.
type fsError struct{ err error }

func (e *fsError) Error() string        { return e.err.Error() }
func (e *fsError) Unwrap() error        { return e.err }
func (e *fsError) Errno() syscall.Errno { return syscall.EIO }

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
	return 0, &fsError{fmt.Errorf("filesystem reported file type %q (want file, directory or symlink)", t)}
}

func (f *jsFileSystem) stat(ctx context.Context, req fsRequest) (vfs.Stat, error) {
	out, err := f.call(ctx, req, nil)
	if err != nil {
		return vfs.Stat{}, err
	}
	var js jsStat
	if err := json.Unmarshal(out, &js); err != nil {
		return vfs.Stat{}, &fsError{fmt.Errorf("%s %s: filesystem answered %q: %w", req.Op, req.Path, out, err)}
	}
	t, err := fileType(js.Type)
	if err != nil {
		return vfs.Stat{}, err
	}
	// A stat without `writable` is read-only to the guest's eyes (0444 files,
	// 0555 directories), as 0.6.0 showed it; fs.memory says writable: true.
	st := vfs.Stat{Type: t, Writable: js.Writable != nil && *js.Writable}
	if js.SizeBytes != nil && *js.SizeBytes >= 0 {
		st.Size = *js.SizeBytes
	}
	if js.ModifiedAtMs != nil {
		st.ModTime = time.UnixMilli(int64(*js.ModifiedAtMs))
	}
	return st, nil
}

func (f *jsFileSystem) Stat(ctx context.Context, path string) (vfs.Stat, error) {
	return f.stat(ctx, fsRequest{Op: "stat", Path: path})
}

func (f *jsFileSystem) List(ctx context.Context, path string) ([]vfs.DirEntry, error) {
	out, err := f.call(ctx, fsRequest{Op: "list", Path: path}, nil)
	if err != nil {
		return nil, err
	}
	var js []struct{ Name, Type string }
	if err := json.Unmarshal(out, &js); err != nil {
		return nil, &fsError{fmt.Errorf("list %s: filesystem answered %q: %w", path, out, err)}
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

func (f *jsFileSystem) Read(ctx context.Context, path string, offset int64, length int) ([]byte, error) {
	id := nextAbortID.Add(1)
	// An interrupted read aborts the JavaScript AbortSignal of that read.
	stop := context.AfterFunc(ctx, func() {
		payload, _ := json.Marshal(map[string]uint64{"abortId": id})
		f.cb.Call(context.Background(), "fs-abort", payload)
	})
	defer stop()
	out, err := f.call(ctx, fsRequest{Op: "read", Path: path, Offset: offset, Length: length, AbortID: id}, nil)
	if err == nil && len(out) > length {
		return nil, &fsError{fmt.Errorf("read %s: filesystem returned %d bytes for a read of %d", path, len(out), length)}
	}
	return out, err
}

func (f *jsPosixFileSystem) CreateFile(ctx context.Context, path string) (vfs.Stat, error) {
	return f.stat(ctx, fsRequest{Op: "createFile", Path: path})
}

func (f *jsPosixFileSystem) Write(ctx context.Context, path string, offset int64, data []byte) (int, error) {
	out, err := f.call(ctx, fsRequest{Op: "write", Path: path, Offset: offset}, data)
	if err != nil {
		return 0, err
	}
	var n int
	if err := json.Unmarshal(out, &n); err != nil || n < 0 || n > len(data) {
		return 0, &fsError{fmt.Errorf("write %s: filesystem answered %q for %d bytes", path, out, len(data))}
	}
	return n, nil
}

func (f *jsPosixFileSystem) Truncate(ctx context.Context, path string, size int64) (vfs.Stat, error) {
	return f.stat(ctx, fsRequest{Op: "truncate", Path: path, Size: size})
}

func (f *jsPosixFileSystem) simple(ctx context.Context, req fsRequest, data []byte) error {
	_, err := f.call(ctx, req, data)
	return err
}

func (f *jsPosixFileSystem) Mkdir(ctx context.Context, path string) error {
	return f.simple(ctx, fsRequest{Op: "mkdir", Path: path}, nil)
}

func (f *jsPosixFileSystem) Unlink(ctx context.Context, path string) error {
	return f.simple(ctx, fsRequest{Op: "unlink", Path: path}, nil)
}

func (f *jsPosixFileSystem) Rmdir(ctx context.Context, path string) error {
	return f.simple(ctx, fsRequest{Op: "rmdir", Path: path}, nil)
}

func (f *jsPosixFileSystem) Rename(ctx context.Context, from, to string, flags uint32) error {
	return f.simple(ctx, fsRequest{Op: "rename", Path: from, To: to, Flags: flags}, nil)
}

func (f *jsPosixFileSystem) Link(ctx context.Context, from, to string) error {
	return f.simple(ctx, fsRequest{Op: "link", Path: from, To: to}, nil)
}

func (f *jsPosixFileSystem) Symlink(ctx context.Context, target, path string) error {
	return f.simple(ctx, fsRequest{Op: "symlink", Path: path, Target: target}, nil)
}

func (f *jsPosixFileSystem) Readlink(ctx context.Context, path string) (string, error) {
	out, err := f.call(ctx, fsRequest{Op: "readlink", Path: path}, nil)
	return string(out), err
}

func (f *jsPosixFileSystem) Setxattr(ctx context.Context, path, name string, value []byte, flags uint32) error {
	return f.simple(ctx, fsRequest{Op: "setxattr", Path: path, Name: name, Flags: flags}, value)
}

func (f *jsPosixFileSystem) Getxattr(ctx context.Context, path, name string) ([]byte, error) {
	return f.call(ctx, fsRequest{Op: "getxattr", Path: path, Name: name}, nil)
}

func (f *jsPosixFileSystem) Listxattr(ctx context.Context, path string) ([]string, error) {
	out, err := f.call(ctx, fsRequest{Op: "listxattr", Path: path}, nil)
	if err != nil {
		return nil, err
	}
	var names []string
	if err := json.Unmarshal(out, &names); err != nil {
		return nil, &fsError{fmt.Errorf("listxattr %s: filesystem answered %q: %w", path, out, err)}
	}
	return names, nil
}

func (f *jsPosixFileSystem) Removexattr(ctx context.Context, path, name string) error {
	return f.simple(ctx, fsRequest{Op: "removexattr", Path: path, Name: name}, nil)
}
