package vfs

import (
	"context"
	"strings"
	"syscall"

	"github.com/hanwen/go-fuse/v2/fuse"
)

// Extended attributes. GETXATTR and LISTXATTR come in two forms: with size
// 0 the guest asks how large the value (list) is, otherwise for the value
// in a buffer of that size, ERANGE if it does not fit. go-fuse passes dest
// of the asked size and puts the returned size in the right reply.

// maxXattrName is Linux's XATTR_NAME_MAX.
const maxXattrName = 255

func checkXattrName(name string) fuse.Status {
	switch {
	case name == "" || strings.IndexByte(name, 0) >= 0:
		return fuse.EINVAL
	case len(name) > maxXattrName:
		return fuse.Status(syscall.ERANGE)
	}
	return fuse.OK
}

func (s *fileServer) GetXAttr(cancel <-chan struct{}, header *fuse.InHeader, name string, dest []byte) (uint32, fuse.Status) {
	if code := checkXattrName(name); !code.Ok() {
		return 0, code
	}
	if s.posix == nil {
		return 0, fuse.ENODATA
	}
	path, code := s.path(header.NodeId)
	if !code.Ok() {
		return 0, code
	}
	var value []byte
	code = s.call(cancel, "getxattr", path, func(ctx context.Context) (err error) {
		value, err = s.posix.Getxattr(ctx, path, name)
		return err
	})
	if !code.Ok() {
		return 0, code
	}
	return fitXattr(dest, value)
}

func (s *fileServer) ListXAttr(cancel <-chan struct{}, header *fuse.InHeader, dest []byte) (uint32, fuse.Status) {
	if s.posix == nil {
		return 0, fuse.OK // an empty list
	}
	path, code := s.path(header.NodeId)
	if !code.Ok() {
		return 0, code
	}
	var names []string
	code = s.call(cancel, "listxattr", path, func(ctx context.Context) (err error) {
		names, err = s.posix.Listxattr(ctx, path)
		return err
	})
	if !code.Ok() {
		return 0, code
	}
	var list []byte
	for _, name := range names {
		if !checkXattrName(name).Ok() {
			s.log.Printf("listxattr %q: dropping name %q", path, name)
			continue
		}
		list = append(append(list, name...), 0)
	}
	return fitXattr(dest, list)
}

// fitXattr answers both forms: the size when dest is empty, else the
// value copied into dest, ERANGE if it does not fit.
func fitXattr(dest, value []byte) (uint32, fuse.Status) {
	if len(value) > xattrSizeMax {
		return 0, fuse.Status(syscall.E2BIG)
	}
	size := uint32(len(value))
	switch {
	case len(dest) == 0:
		return size, fuse.OK
	case len(value) > len(dest):
		return size, fuse.ERANGE
	}
	return uint32(copy(dest, value)), fuse.OK
}

func (s *fileServer) SetXAttr(cancel <-chan struct{}, in *fuse.SetXAttrIn, name string, value []byte) fuse.Status {
	switch {
	case s.writable == nil:
		return fuse.EROFS
	case s.posix == nil:
		return fuse.Status(syscall.ENOTSUP)
	case in.Flags&^(XattrCreate|XattrReplace) != 0:
		return fuse.EINVAL
	case len(value) > xattrSizeMax:
		return fuse.Status(syscall.E2BIG)
	}
	if code := checkXattrName(name); !code.Ok() {
		return code
	}
	path, code := s.path(in.NodeId)
	if !code.Ok() {
		return code
	}
	return s.call(cancel, "setxattr", path, func(ctx context.Context) error {
		return s.posix.Setxattr(ctx, path, name, value, in.Flags)
	})
}

func (s *fileServer) RemoveXAttr(cancel <-chan struct{}, header *fuse.InHeader, name string) fuse.Status {
	switch {
	case s.writable == nil:
		return fuse.EROFS
	case s.posix == nil:
		return fuse.ENODATA
	}
	if code := checkXattrName(name); !code.Ok() {
		return code
	}
	path, code := s.path(header.NodeId)
	if !code.Ok() {
		return code
	}
	return s.call(cancel, "removexattr", path, func(ctx context.Context) error {
		return s.posix.Removexattr(ctx, path, name)
	})
}
