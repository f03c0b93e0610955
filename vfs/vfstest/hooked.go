package vfstest

import (
	"context"

	"github.com/torkbot/sandbox/vfs"
)

// Hooked is a PosixFileSystem that calls Before ahead of every method of
// FS: a non-nil error from it is the method's result, so that tests can
// fail, delay or block chosen operations. op is the method's name in lower
// case ("stat", "mkdir", "getxattr", ...), path its (first) path.
type Hooked struct {
	FS     vfs.PosixFileSystem
	Before func(ctx context.Context, op, path string) error
}

var _ vfs.PosixFileSystem = Hooked{}

func (h Hooked) before(ctx context.Context, op, path string) error {
	if h.Before == nil {
		return nil
	}
	return h.Before(ctx, op, path)
}

func (h Hooked) Stat(ctx context.Context, p string) (vfs.Stat, error) {
	if err := h.before(ctx, "stat", p); err != nil {
		return vfs.Stat{}, err
	}
	return h.FS.Stat(ctx, p)
}

func (h Hooked) List(ctx context.Context, p string) ([]vfs.DirEntry, error) {
	if err := h.before(ctx, "list", p); err != nil {
		return nil, err
	}
	return h.FS.List(ctx, p)
}

func (h Hooked) Read(ctx context.Context, p string, offset int64, length int) ([]byte, error) {
	if err := h.before(ctx, "read", p); err != nil {
		return nil, err
	}
	return h.FS.Read(ctx, p, offset, length)
}

func (h Hooked) CreateFile(ctx context.Context, p string) (vfs.Stat, error) {
	if err := h.before(ctx, "createfile", p); err != nil {
		return vfs.Stat{}, err
	}
	return h.FS.CreateFile(ctx, p)
}

func (h Hooked) Write(ctx context.Context, p string, offset int64, data []byte) (int, error) {
	if err := h.before(ctx, "write", p); err != nil {
		return 0, err
	}
	return h.FS.Write(ctx, p, offset, data)
}

func (h Hooked) Truncate(ctx context.Context, p string, size int64) (vfs.Stat, error) {
	if err := h.before(ctx, "truncate", p); err != nil {
		return vfs.Stat{}, err
	}
	return h.FS.Truncate(ctx, p, size)
}

func (h Hooked) Mkdir(ctx context.Context, p string) error {
	if err := h.before(ctx, "mkdir", p); err != nil {
		return err
	}
	return h.FS.Mkdir(ctx, p)
}

func (h Hooked) Unlink(ctx context.Context, p string) error {
	if err := h.before(ctx, "unlink", p); err != nil {
		return err
	}
	return h.FS.Unlink(ctx, p)
}

func (h Hooked) Rmdir(ctx context.Context, p string) error {
	if err := h.before(ctx, "rmdir", p); err != nil {
		return err
	}
	return h.FS.Rmdir(ctx, p)
}

func (h Hooked) Rename(ctx context.Context, from, to string, flags uint32) error {
	if err := h.before(ctx, "rename", from); err != nil {
		return err
	}
	return h.FS.Rename(ctx, from, to, flags)
}

func (h Hooked) Link(ctx context.Context, from, to string) error {
	if err := h.before(ctx, "link", from); err != nil {
		return err
	}
	return h.FS.Link(ctx, from, to)
}

func (h Hooked) Symlink(ctx context.Context, target, p string) error {
	if err := h.before(ctx, "symlink", p); err != nil {
		return err
	}
	return h.FS.Symlink(ctx, target, p)
}

func (h Hooked) Readlink(ctx context.Context, p string) (string, error) {
	if err := h.before(ctx, "readlink", p); err != nil {
		return "", err
	}
	return h.FS.Readlink(ctx, p)
}

func (h Hooked) Setxattr(ctx context.Context, p, name string, value []byte, flags uint32) error {
	if err := h.before(ctx, "setxattr", p); err != nil {
		return err
	}
	return h.FS.Setxattr(ctx, p, name, value, flags)
}

func (h Hooked) Getxattr(ctx context.Context, p, name string) ([]byte, error) {
	if err := h.before(ctx, "getxattr", p); err != nil {
		return nil, err
	}
	return h.FS.Getxattr(ctx, p, name)
}

func (h Hooked) Listxattr(ctx context.Context, p string) ([]string, error) {
	if err := h.before(ctx, "listxattr", p); err != nil {
		return nil, err
	}
	return h.FS.Listxattr(ctx, p)
}

func (h Hooked) Removexattr(ctx context.Context, p, name string) error {
	if err := h.before(ctx, "removexattr", p); err != nil {
		return err
	}
	return h.FS.Removexattr(ctx, p, name)
}
