package vfs

import (
	"strings"
	"sync"
	"syscall"
)

// rootID is the node id of the mount's root (FUSE_ROOT_ID).
const rootID = 1

// inode is a node the guest kernel holds: a name in a parent directory.
// Its path is computed from its ancestors, so renaming a directory moves
// every node below it at once.
type inode struct {
	id       uint64
	parent   *inode // nil for the root, and for a node whose name is gone
	name     string
	children map[string]*inode
	// lookups is the kernel's reference count (FUSE nlookup): every reply
	// that hands the node to the kernel adds one, FORGET takes them back.
	lookups uint64
	// typ is the type the node had when last handed out: the kernel never
	// looks up a name under a non-directory nor reads through a symlink
	// node, so a request that does is a hostile guest's, and is refused
	// before the backend sees a path like "/symlink/x".
	typ FileType
}

// inodeTable maps the kernel's node ids to paths. A node lives while the
// kernel holds lookups on it or it has children that do.
type inodeTable struct {
	mu     sync.Mutex
	nextID uint64
	byID   map[uint64]*inode
}

func newInodeTable() *inodeTable {
	root := &inode{id: rootID, lookups: 1, typ: Directory} // the kernel never forgets the root
	return &inodeTable{nextID: rootID + 1, byID: map[uint64]*inode{rootID: root}}
}

// path returns the path of node id. ESTALE for an unknown id, ENOENT for a
// node whose name was unlinked or renamed over: a path-based backend cannot
// reach it any more.
func (t *inodeTable) path(id uint64) (string, syscall.Errno) {
	t.mu.Lock()
	defer t.mu.Unlock()
	n := t.byID[id]
	if n == nil {
		return "", syscall.ESTALE
	}
	return n.pathLocked()
}

// typedPath returns the path of node id and its type as handed out.
func (t *inodeTable) typedPath(id uint64) (string, FileType, syscall.Errno) {
	t.mu.Lock()
	defer t.mu.Unlock()
	n := t.byID[id]
	if n == nil {
		return "", 0, syscall.ESTALE
	}
	p, errno := n.pathLocked()
	return p, n.typ, errno
}

// childPath returns the path of name in directory id, checking name;
// ENOTDIR if id is not a directory.
func (t *inodeTable) childPath(id uint64, name string) (string, syscall.Errno) {
	if errno := checkName(name); errno != 0 {
		return "", errno
	}
	dir, typ, errno := t.typedPath(id)
	switch {
	case errno != 0:
		return "", errno
	case typ != Directory:
		return "", syscall.ENOTDIR
	}
	return joinPath(dir, name), 0
}

// Precondition: t.mu is held.
func (n *inode) pathLocked() (string, syscall.Errno) {
	if n.id == rootID {
		return "/", 0
	}
	var names []string
	for ; n.id != rootID; n = n.parent {
		if n.parent == nil {
			return "", syscall.ENOENT
		}
		names = append(names, n.name)
	}
	var b strings.Builder
	for i := len(names) - 1; i >= 0; i-- {
		b.WriteByte('/')
		b.WriteString(names[i])
	}
	return b.String(), 0
}

// lookup hands the node for name in directory parentID, of type typ, to the
// kernel once more, creating it if needed, and returns its id. 0 if the
// parent is gone or is not a directory.
func (t *inodeTable) lookup(parentID uint64, name string, typ FileType) uint64 {
	t.mu.Lock()
	defer t.mu.Unlock()
	p := t.byID[parentID]
	if p == nil || p.typ != Directory {
		return 0
	}
	n := p.children[name]
	if n == nil {
		n = &inode{id: t.nextID, parent: p, name: name}
		t.nextID++
		t.byID[n.id] = n
		if p.children == nil {
			p.children = map[string]*inode{}
		}
		p.children[name] = n
	}
	n.typ = typ
	n.lookups++
	return n.id
}

// forget drops count of the kernel's lookups on node id.
func (t *inodeTable) forget(id, count uint64) {
	t.mu.Lock()
	defer t.mu.Unlock()
	n := t.byID[id]
	if n == nil || id == rootID {
		return
	}
	n.lookups -= min(count, n.lookups)
	t.releaseLocked(n)
}

// releaseLocked deletes n, and then its parents, once nothing holds them.
// Precondition: t.mu is held.
func (t *inodeTable) releaseLocked(n *inode) {
	for n != nil && n.id != rootID && n.lookups == 0 && len(n.children) == 0 {
		delete(t.byID, n.id)
		p := n.parent
		if p != nil && p.children[n.name] == n {
			delete(p.children, n.name)
		}
		n.parent = nil
		n = p
	}
}

// detachLocked cuts n from its parent: its name is gone (unlink, rmdir,
// renamed over). The kernel may still hold it.
// Precondition: t.mu is held.
func (t *inodeTable) detachLocked(n *inode) {
	p := n.parent
	if p == nil {
		return
	}
	delete(p.children, n.name)
	n.parent = nil
	t.releaseLocked(p)
	t.releaseLocked(n)
}

// remove records that name in directory parentID is gone.
func (t *inodeTable) remove(parentID uint64, name string) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if p := t.byID[parentID]; p != nil {
		if n := p.children[name]; n != nil {
			t.detachLocked(n)
		}
	}
}

// rename records a rename: the node at old (and everything below it) is
// now at new, and what was at new is gone.
func (t *inodeTable) rename(oldParentID uint64, oldName string, newParentID uint64, newName string) {
	t.mu.Lock()
	defer t.mu.Unlock()
	oldParent, newParent := t.byID[oldParentID], t.byID[newParentID]
	if oldParent == nil || newParent == nil {
		return
	}
	n := oldParent.children[oldName]
	if replaced := newParent.children[newName]; replaced != nil && replaced != n {
		t.detachLocked(replaced)
	}
	if n == nil {
		return // the kernel did not hold it
	}
	for a := newParent; a != nil; a = a.parent {
		if a == n {
			// Into its own subtree: the kernel never asks, and a backend
			// that did it anyway must not make the table a cycle.
			t.detachLocked(n)
			return
		}
	}
	delete(oldParent.children, oldName)
	n.parent, n.name = newParent, newName
	if newParent.children == nil {
		newParent.children = map[string]*inode{}
	}
	newParent.children[newName] = n
	t.releaseLocked(oldParent)
}

// checkName rejects names the kernel never sends: a hostile guest must not
// reach outside a directory with "..", or name two levels with "a/b".
func checkName(name string) syscall.Errno {
	switch {
	case name == "" || name == "." || name == ".." || strings.ContainsAny(name, "/\x00"):
		return syscall.EINVAL
	case len(name) > maxNameLen:
		return syscall.ENAMETOOLONG
	}
	return 0
}

// maxNameLen is the longest name (NAME_MAX), as STATFS reports.
const maxNameLen = 255

func joinPath(dir, name string) string {
	if dir == "/" {
		return "/" + name
	}
	return dir + "/" + name
}
