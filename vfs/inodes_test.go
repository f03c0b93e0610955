package vfs

import (
	"syscall"
	"testing"
)

// pathOf returns id's path, or the errno as a string.
func pathOf(t *inodeTable, id uint64) string {
	p, errno := t.path(id)
	if errno != 0 {
		return errno.Error()
	}
	return p
}

func wantPath(t *testing.T, tab *inodeTable, id uint64, want string) {
	t.Helper()
	if got := pathOf(tab, id); got != want {
		t.Errorf("path(%d) = %q, want %q", id, got, want)
	}
}

// wantSize checks how many nodes the table holds, the root included.
func wantSize(t *testing.T, tab *inodeTable, want int) {
	t.Helper()
	tab.mu.Lock()
	defer tab.mu.Unlock()
	if len(tab.byID) != want {
		t.Errorf("table holds %d nodes, want %d", len(tab.byID), want)
	}
}

func TestInodeLookupForget(t *testing.T) {
	tab := newInodeTable()
	wantPath(t, tab, rootID, "/")
	a := tab.lookup(rootID, "a", Directory)
	if again := tab.lookup(rootID, "a", Directory); again != a {
		t.Fatalf("a second lookup of a gave id %d, the first %d", again, a)
	}
	b := tab.lookup(a, "b", Directory)
	wantPath(t, tab, a, "/a")
	wantPath(t, tab, b, "/a/b")
	if c := tab.lookup(rootID, "c", Directory); c == a || c == b || c == rootID {
		t.Errorf("c got id %d, already in use", c)
	}
	wantSize(t, tab, 4)

	// a has two lookups: one forget keeps it.
	tab.forget(a, 1)
	wantPath(t, tab, a, "/a")
	// The last lookup goes, but a child the kernel holds keeps a alive.
	tab.forget(a, 1)
	wantPath(t, tab, a, "/a")
	wantPath(t, tab, b, "/a/b")
	// Forgetting b frees b, then a.
	tab.forget(b, 1)
	wantPath(t, tab, b, "stale file handle")
	wantPath(t, tab, a, "stale file handle")
	wantSize(t, tab, 2) // root and c

	// Forgetting more than was looked up, an unknown id or the root is
	// harmless.
	c := tab.lookup(rootID, "c", Directory) // now 2 lookups
	tab.forget(c, 1000)
	wantPath(t, tab, c, "stale file handle")
	tab.forget(12345, 1)
	tab.forget(rootID, 1<<63)
	wantPath(t, tab, rootID, "/")
	wantSize(t, tab, 1)

	// A freed name is handed out again under a new id.
	if a2 := tab.lookup(rootID, "a", Directory); a2 == a {
		t.Errorf("a looked up again reuses the forgotten id %d", a)
	}
	// A lookup in an unknown directory fails.
	if id := tab.lookup(999, "x", Directory); id != 0 {
		t.Errorf("lookup in an unknown directory = %d", id)
	}
}

func TestInodeRenameSubtree(t *testing.T) {
	tab := newInodeTable()
	d := tab.lookup(rootID, "d", Directory)
	sub := tab.lookup(d, "sub", Directory)
	f := tab.lookup(sub, "f", Directory)
	g := tab.lookup(d, "g", Directory)
	e := tab.lookup(rootID, "e", Directory)

	// Move d into e under a new name: everything below follows.
	tab.rename(rootID, "d", e, "moved")
	wantPath(t, tab, d, "/e/moved")
	wantPath(t, tab, sub, "/e/moved/sub")
	wantPath(t, tab, f, "/e/moved/sub/f")
	wantPath(t, tab, g, "/e/moved/g")
	if p, errno := tab.childPath(rootID, "d"); errno != 0 || p != "/d" {
		t.Errorf("childPath(root, d) = %q, %v", p, errno)
	}
	// The old name is free: a lookup of it is a new node.
	if d2 := tab.lookup(rootID, "d", Directory); d2 == d {
		t.Errorf("the old name still maps to the moved node")
	}

	// Move a file up out of the subtree.
	tab.rename(sub, "f", rootID, "f")
	wantPath(t, tab, f, "/f")
	wantPath(t, tab, sub, "/e/moved/sub")

	// Rename over a name the kernel holds: that node's name is gone.
	tab.rename(d, "g", e, "moved2")
	wantPath(t, tab, g, "/e/moved2")
	tab.rename(rootID, "f", e, "moved2")
	wantPath(t, tab, f, "/e/moved2")
	wantPath(t, tab, g, "no such file or directory")
	// The kernel may still forget it.
	tab.forget(g, 1)
	wantPath(t, tab, g, "stale file handle")

	// A rename the table never saw (the kernel did not hold the node)
	// still frees the name it replaces.
	x := tab.lookup(rootID, "x", Directory)
	tab.rename(rootID, "unknown", rootID, "x")
	wantPath(t, tab, x, "no such file or directory")

	// A directory moved into its own subtree cannot make a cycle.
	tab.rename(e, "moved", sub, "loop")
	wantPath(t, tab, d, "no such file or directory")
	wantPath(t, tab, sub, "no such file or directory")

	// Renaming to itself changes nothing.
	y := tab.lookup(rootID, "y", Directory)
	tab.rename(rootID, "y", rootID, "y")
	wantPath(t, tab, y, "/y")
}

func TestInodeRemove(t *testing.T) {
	tab := newInodeTable()
	d := tab.lookup(rootID, "d", Directory)
	f := tab.lookup(d, "f", Directory)
	g := tab.lookup(d, "g", Directory)

	// unlink f: its name is gone at once, the kernel still holds the id.
	tab.remove(d, "f")
	wantPath(t, tab, f, "no such file or directory")
	if _, errno := tab.path(f); errno != syscall.ENOENT {
		t.Errorf("path of an unlinked node: %v, want ENOENT", errno)
	}
	// A new file of the same name is a new node.
	f2 := tab.lookup(d, "f", Directory)
	if f2 == f {
		t.Error("a new file under an unlinked name reuses its node")
	}
	tab.forget(f, 1)
	wantPath(t, tab, f, "stale file handle")

	// rmdir of a directory whose children the kernel still holds (the
	// backend had them removed first, or renamed behind the kernel's back):
	// the children are cut off with it.
	tab.remove(rootID, "d")
	wantPath(t, tab, d, "no such file or directory")
	wantPath(t, tab, g, "no such file or directory")
	tab.forget(g, 1)
	tab.forget(d, 1)
	wantPath(t, tab, g, "stale file handle")
	// d lives on, nameless, while the kernel holds f2 below it.
	wantPath(t, tab, d, "no such file or directory")

	// Removing an unknown name, or in an unknown directory, is harmless.
	tab.remove(rootID, "nothing")
	tab.remove(999, "x")

	// f2 was below d: cut off too, and freed, with d, once forgotten.
	wantPath(t, tab, f2, "no such file or directory")
	tab.forget(f2, 1)
	wantPath(t, tab, f2, "stale file handle")
	wantPath(t, tab, d, "stale file handle")
	wantSize(t, tab, 1)
}

func TestCheckName(t *testing.T) {
	for name, want := range map[string]syscall.Errno{
		"a": 0, "a b": 0, "...": 0, string(make([]byte, 255)): syscall.EINVAL,
		"": syscall.EINVAL, ".": syscall.EINVAL, "..": syscall.EINVAL,
		"a/b": syscall.EINVAL, "/": syscall.EINVAL, "a\x00": syscall.EINVAL,
		string(make([]byte, 256)): syscall.EINVAL,
	} {
		if got := checkName(name); got != want {
			t.Errorf("checkName(%q) = %v, want %v", name, got, want)
		}
	}
	long := make([]byte, 256)
	for i := range long {
		long[i] = 'x'
	}
	if got := checkName(string(long)); got != syscall.ENAMETOOLONG {
		t.Errorf("checkName(256 bytes) = %v", got)
	}
	if got := checkName(string(long[:255])); got != 0 {
		t.Errorf("checkName(255 bytes) = %v", got)
	}
}
