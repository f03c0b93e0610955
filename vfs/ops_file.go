package vfs

import (
	"context"
	"math"
	"syscall"

	"github.com/hanwen/go-fuse/v2/fuse"
)

// File operations. Opens are stateless (file handle 0): the backend is
// path-based, so every read and write names the path again.

func (s *fileServer) Open(cancel <-chan struct{}, in *fuse.OpenIn, out *fuse.OpenOut) fuse.Status {
	if s.writable == nil && (in.Flags&syscall.O_ACCMODE != syscall.O_RDONLY || in.Flags&syscall.O_TRUNC != 0) {
		return fuse.EROFS
	}
	path, code := s.filePath(in.NodeId)
	if !code.Ok() {
		return code
	}
	st, code := s.stat(cancel, path)
	switch {
	case !code.Ok():
		return code
	case st.Type == Directory:
		return fuse.Status(syscall.EISDIR)
	case st.Type == Symlink:
		return fuse.Status(syscall.ELOOP) // it became one behind the kernel's back
	}
	*out = fuse.OpenOut{OpenFlags: fuse.FOPEN_NOFLUSH}
	if st.Size == 0 {
		// Size 0 may mean "unknown": the page cache would stop reading at
		// 0, so bypass it and read until the backend returns nothing.
		out.OpenFlags |= fuse.FOPEN_DIRECT_IO
	}
	return fuse.OK
}

func (s *fileServer) Create(cancel <-chan struct{}, in *fuse.CreateIn, name string, out *fuse.CreateOut) fuse.Status {
	code := s.createFile(cancel, in.NodeId, name, &out.EntryOut)
	out.OpenOut = fuse.OpenOut{OpenFlags: fuse.FOPEN_NOFLUSH}
	return code
}

// Mknod makes regular files only: the backend has no devices, FIFOs or
// sockets.
func (s *fileServer) Mknod(cancel <-chan struct{}, in *fuse.MknodIn, name string, out *fuse.EntryOut) fuse.Status {
	if in.Mode&syscall.S_IFMT != syscall.S_IFREG {
		return fuse.EPERM
	}
	return s.createFile(cancel, in.NodeId, name, out)
}

func (s *fileServer) createFile(cancel <-chan struct{}, parent uint64, name string, out *fuse.EntryOut) fuse.Status {
	if s.writable == nil {
		return fuse.EROFS
	}
	path, code := s.childPath(parent, name)
	if !code.Ok() {
		return code
	}
	var st Stat
	code = s.call(cancel, "create", path, func(ctx context.Context) (err error) {
		st, err = s.writable.CreateFile(ctx, path)
		return err
	})
	if code.Ok() {
		code = s.checkStat(path, st)
	}
	if !code.Ok() {
		return code
	}
	return s.handOut(parent, name, st, out)
}

func (s *fileServer) Read(cancel <-chan struct{}, in *fuse.ReadIn, buf []byte) (fuse.ReadResult, fuse.Status) {
	if in.Offset > math.MaxInt64 {
		return nil, fuse.EINVAL
	}
	path, code := s.filePath(in.NodeId)
	if !code.Ok() {
		return nil, code
	}
	size := int(in.Size)
	var data []byte
	code = s.call(cancel, "read", path, func(ctx context.Context) (err error) {
		data, err = s.fsys.Read(ctx, path, int64(in.Offset), size)
		return err
	})
	if !code.Ok() {
		return nil, code
	}
	return fuse.ReadResultData(data[:min(len(data), size)]), fuse.OK
}

func (s *fileServer) Write(cancel <-chan struct{}, in *fuse.WriteIn, data []byte) (uint32, fuse.Status) {
	if s.writable == nil {
		return 0, fuse.EROFS
	}
	if in.Offset > math.MaxInt64 {
		return 0, fuse.EINVAL
	}
	path, code := s.filePath(in.NodeId)
	if !code.Ok() {
		return 0, code
	}
	var n int
	code = s.call(cancel, "write", path, func(ctx context.Context) (err error) {
		n, err = s.writable.Write(ctx, path, int64(in.Offset), data)
		return err
	})
	if !code.Ok() {
		return 0, code
	}
	if n < 0 || n > len(data) {
		s.log.Printf("write %q: backend wrote %d of %d bytes", path, n, len(data))
		return 0, fuse.EIO
	}
	return uint32(n), fuse.OK
}

// Every backend write is complete when it returns: there is nothing to
// flush or sync, and nothing to release. ENOSYS tells the kernel so once:
// it then completes flush, fsync and fsyncdir itself without a round trip
// (fuse_flush, fuse_fsync_common), which a close-heavy workload would
// otherwise pay for every close (a shell redirection closes twice).
// FOPEN_NOFLUSH on every open says the same for flush from the start.

func (s *fileServer) Release(cancel <-chan struct{}, in *fuse.ReleaseIn)         {}
func (s *fileServer) Flush(cancel <-chan struct{}, in *fuse.FlushIn) fuse.Status { return fuse.ENOSYS }
func (s *fileServer) Fsync(cancel <-chan struct{}, in *fuse.FsyncIn) fuse.Status { return fuse.ENOSYS }
func (s *fileServer) FsyncDir(cancel <-chan struct{}, in *fuse.FsyncIn) fuse.Status {
	return fuse.ENOSYS
}
