// Package vfstest holds test doubles for package vfs: MemFS, an in-memory
// PosixFileSystem; ReadOnly, which hides its write methods; and Hooked,
// which fails, delays or blocks chosen operations.
package vfstest

import (
	"context"
	"path"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/torkbot/sandbox/vfs"
)

// MemFS is an in-memory PosixFileSystem with real hard links (shared
// nodes). The zero value is not ready; use NewMemFS.
type MemFS struct {
	mu   sync.Mutex
	root *memNode
}

type memNode struct {
	typ      vfs.FileType
	data     []byte
	target   string
	children map[string]*memNode
	xattrs   map[string][]byte
	mtime    time.Time
}

var _ vfs.PosixFileSystem = (*MemFS)(nil)

// NewMemFS returns a MemFS holding files (path → contents), creating their
// parent directories.
func NewMemFS(files map[string]string) *MemFS {
	m := &MemFS{root: newDir()}
	for p, contents := range files {
		dir := m.root
		parts := strings.Split(strings.Trim(p, "/"), "/")
		for _, name := range parts[:len(parts)-1] {
			if dir.children[name] == nil {
				dir.children[name] = newDir()
			}
			dir = dir.children[name]
		}
		dir.children[parts[len(parts)-1]] = &memNode{typ: vfs.File, data: []byte(contents), xattrs: map[string][]byte{}, mtime: time.Now()}
	}
	return m
}

func newDir() *memNode {
	return &memNode{typ: vfs.Directory, children: map[string]*memNode{}, xattrs: map[string][]byte{}, mtime: time.Now()}
}

// walk returns the node at p. Precondition: m.mu is held.
func (m *MemFS) walk(p string) (*memNode, error) {
	n := m.root
	for _, name := range strings.Split(strings.Trim(p, "/"), "/") {
		if name == "" {
			continue
		}
		if n.typ != vfs.Directory {
			return nil, syscall.ENOTDIR
		}
		if n = n.children[name]; n == nil {
			return nil, syscall.ENOENT
		}
	}
	return n, nil
}

// parent returns the directory holding p and p's name.
func (m *MemFS) parent(p string) (*memNode, string, error) {
	dir, err := m.walk(path.Dir(p))
	if err != nil {
		return nil, "", err
	}
	if dir.typ != vfs.Directory {
		return nil, "", syscall.ENOTDIR
	}
	return dir, path.Base(p), nil
}

func (n *memNode) stat() vfs.Stat {
	size := int64(len(n.data))
	if n.typ == vfs.Symlink {
		size = int64(len(n.target))
	}
	return vfs.Stat{Type: n.typ, Size: size, ModTime: n.mtime, Writable: true}
}

func (m *MemFS) Stat(ctx context.Context, p string) (vfs.Stat, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	n, err := m.walk(p)
	if err != nil {
		return vfs.Stat{}, err
	}
	return n.stat(), nil
}

func (m *MemFS) List(ctx context.Context, p string) ([]vfs.DirEntry, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	n, err := m.walk(p)
	if err != nil {
		return nil, err
	}
	if n.typ != vfs.Directory {
		return nil, syscall.ENOTDIR
	}
	var entries []vfs.DirEntry
	for name, c := range n.children {
		entries = append(entries, vfs.DirEntry{Name: name, Type: c.typ})
	}
	slices.SortFunc(entries, func(a, b vfs.DirEntry) int { return strings.Compare(a.Name, b.Name) })
	return entries, nil
}

func (m *MemFS) Read(ctx context.Context, p string, offset int64, length int) ([]byte, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	n, err := m.walk(p)
	if err != nil {
		return nil, err
	}
	if n.typ == vfs.Directory {
		return nil, syscall.EISDIR
	}
	if offset >= int64(len(n.data)) {
		return nil, nil
	}
	return slices.Clone(n.data[offset:min(int64(len(n.data)), offset+int64(length))]), nil
}

func (m *MemFS) CreateFile(ctx context.Context, p string) (vfs.Stat, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	dir, name, err := m.parent(p)
	if err != nil {
		return vfs.Stat{}, err
	}
	if dir.children[name] != nil {
		return vfs.Stat{}, syscall.EEXIST
	}
	n := &memNode{typ: vfs.File, xattrs: map[string][]byte{}, mtime: time.Now()}
	dir.children[name] = n
	dir.mtime = n.mtime
	return n.stat(), nil
}

func (m *MemFS) Write(ctx context.Context, p string, offset int64, data []byte) (int, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	n, err := m.walk(p)
	if err != nil {
		return 0, err
	}
	if n.typ != vfs.File {
		return 0, syscall.EISDIR
	}
	if end := offset + int64(len(data)); end > int64(len(n.data)) {
		n.data = append(n.data, make([]byte, end-int64(len(n.data)))...)
	}
	copy(n.data[offset:], data)
	n.mtime = time.Now()
	return len(data), nil
}

func (m *MemFS) Truncate(ctx context.Context, p string, size int64) (vfs.Stat, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	n, err := m.walk(p)
	if err != nil {
		return vfs.Stat{}, err
	}
	if n.typ != vfs.File {
		return vfs.Stat{}, syscall.EISDIR
	}
	if size <= int64(len(n.data)) {
		n.data = n.data[:size]
	} else {
		n.data = append(n.data, make([]byte, size-int64(len(n.data)))...)
	}
	n.mtime = time.Now()
	return n.stat(), nil
}

// add puts n at p, which must not exist.
func (m *MemFS) add(p string, n *memNode) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	dir, name, err := m.parent(p)
	if err != nil {
		return err
	}
	if dir.children[name] != nil {
		return syscall.EEXIST
	}
	dir.children[name] = n
	dir.mtime = time.Now()
	return nil
}

func (m *MemFS) Mkdir(ctx context.Context, p string) error { return m.add(p, newDir()) }

func (m *MemFS) Symlink(ctx context.Context, target, p string) error {
	return m.add(p, &memNode{typ: vfs.Symlink, target: target, xattrs: map[string][]byte{}, mtime: time.Now()})
}

func (m *MemFS) Link(ctx context.Context, from, to string) error {
	m.mu.Lock()
	n, err := m.walk(from)
	m.mu.Unlock()
	if err != nil {
		return err
	}
	if n.typ == vfs.Directory {
		return syscall.EPERM
	}
	return m.add(to, n)
}

func (m *MemFS) Unlink(ctx context.Context, p string) error {
	return m.removeEntry(p, func(n *memNode) error {
		if n.typ == vfs.Directory {
			return syscall.EISDIR
		}
		return nil
	})
}

func (m *MemFS) Rmdir(ctx context.Context, p string) error {
	return m.removeEntry(p, func(n *memNode) error {
		switch {
		case n.typ != vfs.Directory:
			return syscall.ENOTDIR
		case len(n.children) > 0:
			return syscall.ENOTEMPTY
		}
		return nil
	})
}

func (m *MemFS) removeEntry(p string, check func(*memNode) error) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	dir, name, err := m.parent(p)
	if err != nil {
		return err
	}
	n := dir.children[name]
	if n == nil {
		return syscall.ENOENT
	}
	if err := check(n); err != nil {
		return err
	}
	delete(dir.children, name)
	dir.mtime = time.Now()
	return nil
}

func (m *MemFS) Rename(ctx context.Context, from, to string, flags uint32) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if to == from {
		return nil
	}
	if strings.HasPrefix(to, from+"/") {
		return syscall.EINVAL
	}
	fromDir, fromName, err := m.parent(from)
	if err != nil {
		return err
	}
	n := fromDir.children[fromName]
	if n == nil {
		return syscall.ENOENT
	}
	toDir, toName, err := m.parent(to)
	if err != nil {
		return err
	}
	if old := toDir.children[toName]; old != nil {
		switch {
		case flags&vfs.RenameNoReplace != 0:
			return syscall.EEXIST
		case old.typ == vfs.Directory && n.typ != vfs.Directory:
			return syscall.EISDIR
		case old.typ != vfs.Directory && n.typ == vfs.Directory:
			return syscall.ENOTDIR
		case old.typ == vfs.Directory && len(old.children) > 0:
			return syscall.ENOTEMPTY
		}
	}
	delete(fromDir.children, fromName)
	toDir.children[toName] = n
	return nil
}

func (m *MemFS) Readlink(ctx context.Context, p string) (string, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	n, err := m.walk(p)
	if err != nil {
		return "", err
	}
	if n.typ != vfs.Symlink {
		return "", syscall.EINVAL
	}
	return n.target, nil
}

func (m *MemFS) Setxattr(ctx context.Context, p, name string, value []byte, flags uint32) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	n, err := m.walk(p)
	if err != nil {
		return err
	}
	_, exists := n.xattrs[name]
	switch {
	case flags&vfs.XattrCreate != 0 && exists:
		return syscall.EEXIST
	case flags&vfs.XattrReplace != 0 && !exists:
		return syscall.ENODATA
	}
	n.xattrs[name] = slices.Clone(value)
	return nil
}

func (m *MemFS) Getxattr(ctx context.Context, p, name string) ([]byte, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	n, err := m.walk(p)
	if err != nil {
		return nil, err
	}
	v, ok := n.xattrs[name]
	if !ok {
		return nil, syscall.ENODATA
	}
	return slices.Clone(v), nil
}

func (m *MemFS) Listxattr(ctx context.Context, p string) ([]string, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	n, err := m.walk(p)
	if err != nil {
		return nil, err
	}
	var names []string
	for name := range n.xattrs {
		names = append(names, name)
	}
	slices.Sort(names)
	return names, nil
}

func (m *MemFS) Removexattr(ctx context.Context, p, name string) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	n, err := m.walk(p)
	if err != nil {
		return err
	}
	if _, ok := n.xattrs[name]; !ok {
		return syscall.ENODATA
	}
	delete(n.xattrs, name)
	return nil
}

// ReadOnly exposes only the FileSystem methods of a filesystem, so that
// vfs serves it read-only.
type ReadOnly struct{ FS vfs.FileSystem }

var _ vfs.FileSystem = ReadOnly{}

func (r ReadOnly) Stat(ctx context.Context, p string) (vfs.Stat, error) { return r.FS.Stat(ctx, p) }
func (r ReadOnly) List(ctx context.Context, p string) ([]vfs.DirEntry, error) {
	return r.FS.List(ctx, p)
}
func (r ReadOnly) Read(ctx context.Context, p string, offset int64, length int) ([]byte, error) {
	return r.FS.Read(ctx, p, offset, length)
}
