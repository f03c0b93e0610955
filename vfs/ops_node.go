package vfs

import (
	"context"
	"math"
	"syscall"

	"github.com/hanwen/go-fuse/v2/fuse"
)

// Operations on nodes as such: finding them, describing them, letting go.

func (s *fileServer) Lookup(cancel <-chan struct{}, header *fuse.InHeader, name string, out *fuse.EntryOut) fuse.Status {
	path, code := s.childPath(header.NodeId, name)
	if !code.Ok() {
		return code
	}
	st, code := s.stat(cancel, path)
	if code == fuse.ENOENT && s.cacheTimeout() > 0 {
		// A negative entry: the kernel remembers that the name is absent
		// (git and compilers probe many absent names).
		*out = fuse.EntryOut{}
		out.SetEntryTimeout(s.cacheTimeout())
		return fuse.OK
	}
	if !code.Ok() {
		return code
	}
	return s.handOut(header.NodeId, name, st, out)
}

// handOut gives the kernel the node for name in directory parent (one more
// lookup on it), described by st.
func (s *fileServer) handOut(parent uint64, name string, st Stat, out *fuse.EntryOut) fuse.Status {
	id := s.nodes.lookup(parent, name, st.Type)
	if id == 0 {
		return fuse.ENOENT // the directory went away meanwhile
	}
	s.fillEntry(out, id, st)
	return fuse.OK
}

// statAndHandOut is handOut after a mutation that made path.
func (s *fileServer) statAndHandOut(cancel <-chan struct{}, parent uint64, name, path string, out *fuse.EntryOut) fuse.Status {
	st, code := s.stat(cancel, path)
	if !code.Ok() {
		return code
	}
	return s.handOut(parent, name, st, out)
}

func (s *fileServer) Forget(nodeid, nlookup uint64) { s.nodes.forget(nodeid, nlookup) }

func (s *fileServer) GetAttr(cancel <-chan struct{}, in *fuse.GetAttrIn, out *fuse.AttrOut) fuse.Status {
	path, code := s.path(in.NodeId)
	if !code.Ok() {
		return code
	}
	st, code := s.stat(cancel, path)
	if !code.Ok() {
		return code
	}
	s.fillAttr(&out.Attr, in.NodeId, st)
	out.SetTimeout(s.cacheTimeout())
	return fuse.OK
}

// SetAttr changes the size through the backend. Mode, owner and times have
// nowhere to go in a path-based backend: changing them succeeds and changes
// nothing, because cp -a, tar -x and git set them and fail on an error.
func (s *fileServer) SetAttr(cancel <-chan struct{}, in *fuse.SetAttrIn, out *fuse.AttrOut) fuse.Status {
	if s.writable == nil {
		return fuse.EROFS
	}
	path, code := s.path(in.NodeId)
	if !code.Ok() {
		return code
	}
	var st Stat
	if in.Valid&fuse.FATTR_SIZE != 0 {
		if in.Size > math.MaxInt64 {
			return fuse.Status(syscall.EFBIG)
		}
		if path, code = s.filePath(in.NodeId); !code.Ok() {
			return code
		}
		code = s.call(cancel, "truncate", path, func(ctx context.Context) (err error) {
			st, err = s.writable.Truncate(ctx, path, int64(in.Size))
			return err
		})
		if code.Ok() {
			code = s.checkStat(path, st)
		}
	} else {
		st, code = s.stat(cancel, path)
	}
	if !code.Ok() {
		return code
	}
	s.fillAttr(&out.Attr, in.NodeId, st)
	out.SetTimeout(s.cacheTimeout())
	return fuse.OK
}

// Access is asked only without default_permissions: write access to a
// read-only filesystem is refused, anything else on an existing file is
// granted (everything belongs to root).
func (s *fileServer) Access(cancel <-chan struct{}, in *fuse.AccessIn) fuse.Status {
	if in.Mask&unixWOK != 0 && s.writable == nil {
		return fuse.EROFS
	}
	path, code := s.path(in.NodeId)
	if !code.Ok() {
		return code
	}
	_, code = s.stat(cancel, path)
	return code
}

const unixWOK = 2 // W_OK

// StatFs reports a large, empty filesystem: the backend has no notion of
// capacity, and tools that check free space before writing must not
// refuse to.
func (s *fileServer) StatFs(cancel <-chan struct{}, header *fuse.InHeader, out *fuse.StatfsOut) fuse.Status {
	const blocks = 1 << 28 // 1 TiB of 4 KiB blocks
	const files = 1 << 20
	*out = fuse.StatfsOut{
		Blocks: blocks, Bfree: blocks, Bavail: blocks,
		Files: files, Ffree: files,
		Bsize: blockSize, Frsize: blockSize, NameLen: maxNameLen,
	}
	return fuse.OK
}
