package vfs

import (
	"context"
	"syscall"

	"github.com/hanwen/go-fuse/v2/fuse"
)

// Namespace operations need a PosixFileSystem.

// requirePosix says why a namespace operation cannot be done, if it cannot.
func (s *fileServer) requirePosix() fuse.Status {
	switch {
	case s.posix != nil:
		return fuse.OK
	case s.writable == nil:
		return fuse.EROFS
	default:
		return fuse.EPERM
	}
}

func (s *fileServer) Mkdir(cancel <-chan struct{}, in *fuse.MkdirIn, name string, out *fuse.EntryOut) fuse.Status {
	if code := s.requirePosix(); !code.Ok() {
		return code
	}
	path, code := s.childPath(in.NodeId, name)
	if !code.Ok() {
		return code
	}
	code = s.call(cancel, "mkdir", path, func(ctx context.Context) error { return s.posix.Mkdir(ctx, path) })
	if !code.Ok() {
		return code
	}
	return s.statAndHandOut(cancel, in.NodeId, name, path, out)
}

func (s *fileServer) Unlink(cancel <-chan struct{}, header *fuse.InHeader, name string) fuse.Status {
	return s.remove(cancel, header.NodeId, name, "unlink", func(ctx context.Context, path string) error {
		return s.posix.Unlink(ctx, path)
	})
}

func (s *fileServer) Rmdir(cancel <-chan struct{}, header *fuse.InHeader, name string) fuse.Status {
	return s.remove(cancel, header.NodeId, name, "rmdir", func(ctx context.Context, path string) error {
		return s.posix.Rmdir(ctx, path)
	})
}

func (s *fileServer) remove(cancel <-chan struct{}, parent uint64, name, op string, f func(context.Context, string) error) fuse.Status {
	if code := s.requirePosix(); !code.Ok() {
		return code
	}
	path, code := s.childPath(parent, name)
	if !code.Ok() {
		return code
	}
	code = s.call(cancel, op, path, func(ctx context.Context) error { return f(ctx, path) })
	if code.Ok() {
		s.nodes.remove(parent, name)
	}
	return code
}

// Rename serves RENAME and RENAME2. RENAME_EXCHANGE (and WHITEOUT) cannot
// be expressed to the backend: EINVAL, as filesystems without them answer.
func (s *fileServer) Rename(cancel <-chan struct{}, in *fuse.RenameIn, oldName, newName string) fuse.Status {
	if code := s.requirePosix(); !code.Ok() {
		return code
	}
	if in.Flags&^RenameNoReplace != 0 {
		return fuse.EINVAL
	}
	from, code := s.childPath(in.NodeId, oldName)
	if !code.Ok() {
		return code
	}
	to, code := s.childPath(in.Newdir, newName)
	if !code.Ok() {
		return code
	}
	code = s.call(cancel, "rename", from, func(ctx context.Context) error {
		return s.posix.Rename(ctx, from, to, in.Flags)
	})
	if code.Ok() {
		s.nodes.rename(in.NodeId, oldName, in.Newdir, newName)
	}
	return code
}

// Link makes the new name a node of its own: the backend has no inode
// identity to share between names.
func (s *fileServer) Link(cancel <-chan struct{}, in *fuse.LinkIn, name string, out *fuse.EntryOut) fuse.Status {
	if code := s.requirePosix(); !code.Ok() {
		return code
	}
	from, typ, errno := s.nodes.typedPath(in.Oldnodeid)
	switch {
	case errno != 0:
		return fuse.Status(errno)
	case typ == Directory:
		return fuse.EPERM // link(2) on a directory; the kernel never asks
	}
	to, code := s.childPath(in.NodeId, name)
	if !code.Ok() {
		return code
	}
	code = s.call(cancel, "link", to, func(ctx context.Context) error { return s.posix.Link(ctx, from, to) })
	if !code.Ok() {
		return code
	}
	return s.statAndHandOut(cancel, in.NodeId, name, to, out)
}

// maxSymlinkTarget is Linux's limit on a symlink's target (PATH_MAX - 1).
const maxSymlinkTarget = 4095

func (s *fileServer) Symlink(cancel <-chan struct{}, header *fuse.InHeader, target, name string, out *fuse.EntryOut) fuse.Status {
	if code := s.requirePosix(); !code.Ok() {
		return code
	}
	switch {
	case target == "":
		return fuse.ENOENT
	case len(target) > maxSymlinkTarget:
		return fuse.Status(syscall.ENAMETOOLONG)
	}
	path, code := s.childPath(header.NodeId, name)
	if !code.Ok() {
		return code
	}
	code = s.call(cancel, "symlink", path, func(ctx context.Context) error { return s.posix.Symlink(ctx, target, path) })
	if !code.Ok() {
		return code
	}
	return s.statAndHandOut(cancel, header.NodeId, name, path, out)
}

func (s *fileServer) Readlink(cancel <-chan struct{}, header *fuse.InHeader) ([]byte, fuse.Status) {
	if s.posix == nil {
		return nil, fuse.EINVAL // no symlinks to read
	}
	path, code := s.typedPath(header.NodeId, Symlink, syscall.EINVAL)
	if !code.Ok() {
		return nil, code
	}
	var target string
	code = s.call(cancel, "readlink", path, func(ctx context.Context) (err error) {
		target, err = s.posix.Readlink(ctx, path)
		return err
	})
	if !code.Ok() {
		return nil, code
	}
	if len(target) > maxSymlinkTarget {
		s.log.Printf("readlink %q: target of %d bytes", path, len(target))
		return nil, fuse.EIO
	}
	return []byte(target), fuse.OK
}
