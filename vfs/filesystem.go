package vfs

import (
	"context"
	"strconv"
	"time"
)

// FileSystem is a read-only, path-based filesystem: the methods every
// backend has. Paths are absolute, cleaned and slash-separated ("/",
// "/a/b"); names in them are never empty, ".", ".." or longer than 255
// bytes, and hold no NUL.
//
// Paths never pass through a symlink: the server refuses a name under a
// node that is not a directory and a read or write of a node Stat called a
// symlink. A backend over a host directory must not follow symlinks either
// (lstat, not stat; O_NOFOLLOW on the last component; no symlink
// resolution in between): the guest creates symlinks with targets of its
// choosing, and a backend whose Stat follows one reports the target as the
// file, which the guest then reads or writes outside the root.
//
// Methods are called concurrently, each from its own goroutine, and must be
// safe for that. Errors carry an errno (see the package doc); ctx is
// cancelled when the guest interrupts the operation, when the call takes
// longer than Options.CallTimeout, and when Serve returns.
type FileSystem interface {
	// Stat describes the file at path without following a final symlink.
	Stat(ctx context.Context, path string) (Stat, error)
	// List returns the entries of the directory at path, without "." and
	// "..", in a stable order.
	List(ctx context.Context, path string) ([]DirEntry, error)
	// Read returns up to length bytes of the file at path from offset;
	// fewer (or none) at the end of the file.
	Read(ctx context.Context, path string, offset int64, length int) ([]byte, error)
}

// WritableFileSystem is a FileSystem whose files can be created and
// written. A FileSystem that is not one is served read-only: every
// mutation fails with EROFS.
type WritableFileSystem interface {
	FileSystem
	// CreateFile creates an empty regular file at path; EEXIST if
	// something is there already.
	CreateFile(ctx context.Context, path string) (Stat, error)
	// Write writes data at offset (extending the file, zero-filled, if
	// offset is past its end) and returns how many bytes it wrote.
	Write(ctx context.Context, path string, offset int64, data []byte) (int, error)
	// Truncate sets the size of the file at path.
	Truncate(ctx context.Context, path string, size int64) (Stat, error)
}

// PosixFileSystem is a WritableFileSystem with directories, links and
// extended attributes. On a WritableFileSystem that is not one, namespace
// operations fail with EPERM and setting xattrs with ENOTSUP; reading
// xattrs finds none.
type PosixFileSystem interface {
	WritableFileSystem
	Mkdir(ctx context.Context, path string) error
	Unlink(ctx context.Context, path string) error
	Rmdir(ctx context.Context, path string) error
	// Rename moves from to to, replacing what is at to unless flags has
	// RenameNoReplace (then EEXIST).
	Rename(ctx context.Context, from, to string, flags uint32) error
	// Link makes to a hard link to the file at from.
	Link(ctx context.Context, from, to string) error
	// Symlink creates a symlink at path pointing to target.
	Symlink(ctx context.Context, target, path string) error
	Readlink(ctx context.Context, path string) (string, error)
	// Setxattr sets attribute name; flags is 0, XattrCreate (EEXIST if
	// set) or XattrReplace (ENODATA if not set).
	Setxattr(ctx context.Context, path, name string, value []byte, flags uint32) error
	// Getxattr returns the value of attribute name, ENODATA if not set.
	Getxattr(ctx context.Context, path, name string) ([]byte, error)
	Listxattr(ctx context.Context, path string) ([]string, error)
	Removexattr(ctx context.Context, path, name string) error
}

// Flags of PosixFileSystem.Rename and Setxattr, with Linux's values.
const (
	RenameNoReplace = 1 // RENAME_NOREPLACE
	XattrCreate     = 1 // XATTR_CREATE
	XattrReplace    = 2 // XATTR_REPLACE
)

// FileType is the type of a file.
type FileType int

const (
	File FileType = iota
	Directory
	Symlink
)

func (t FileType) String() string {
	switch t {
	case File:
		return "file"
	case Directory:
		return "directory"
	case Symlink:
		return "symlink"
	}
	return "FileType(" + strconv.Itoa(int(t)) + ")"
}

// Stat describes a file. A backend that does not know a file's size or
// modification time leaves them 0 and zero.
type Stat struct {
	Type    FileType
	Size    int64
	ModTime time.Time
	// Writable says whether the entry may be written; a file that is not
	// shows mode 0444, a directory 0555. Ignored on a read-only FileSystem
	// (always 0444 and 0555).
	Writable bool
}

// DirEntry is one entry of a directory listing.
type DirEntry struct {
	Name string
	Type FileType
}
