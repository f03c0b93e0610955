package vfs

import (
	"syscall"

	"github.com/hanwen/go-fuse/v2/fuse"
)

// Modes the server shows: the backend has no permissions, owners or
// inode numbers, so they are synthesized. Everything belongs to root.
// The read-only modes are what @torkbot/sandbox 0.6.0 showed for an entry
// whose stat did not say writable, and are kept for compatibility.
const (
	dirMode         = syscall.S_IFDIR | 0o755
	readOnlyDirMode = syscall.S_IFDIR | 0o555
	fileMode        = syscall.S_IFREG | 0o644
	readOnlyMode    = syscall.S_IFREG | 0o444
	symlinkMode     = syscall.S_IFLNK | 0o777
	blockSize       = 4096
)

// mode returns the mode shown for st.
func (s *fileServer) mode(st Stat) uint32 {
	writable := st.Writable && s.writable != nil
	switch {
	case st.Type == Symlink:
		return symlinkMode
	case st.Type == Directory && writable:
		return dirMode
	case st.Type == Directory:
		return readOnlyDirMode
	case writable:
		return fileMode
	}
	return readOnlyMode
}

// fillAttr describes node id. nlink is 1 for every file, directories
// included: hard links are separate nodes to a path-based server, and for
// directories 1 is the "count unknown" that find(1) and fts(3) honour
// (2 would tell them there are no subdirectories).
func (s *fileServer) fillAttr(out *fuse.Attr, id uint64, st Stat) {
	size := uint64(max(st.Size, 0))
	*out = fuse.Attr{
		Ino:     id,
		Size:    size,
		Blocks:  (size + 511) / 512,
		Mode:    s.mode(st),
		Nlink:   1,
		Blksize: blockSize,
	}
	if !st.ModTime.IsZero() {
		t := st.ModTime
		out.SetTimes(&t, &t, &t)
	}
}

// fillEntry hands node id, described by st, to the kernel.
func (s *fileServer) fillEntry(out *fuse.EntryOut, id uint64, st Stat) {
	out.NodeId = id
	out.Generation = 0 // ids are never reused
	out.SetEntryTimeout(s.cacheTimeout())
	out.SetAttrTimeout(s.cacheTimeout())
	s.fillAttr(&out.Attr, id, st)
}
