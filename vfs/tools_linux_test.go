package vfs_test

import (
	"bytes"
	"crypto/rand"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/torkbot/sandbox/vfs"
	"github.com/torkbot/sandbox/vfs/vfstest"

	"github.com/torkbot/sandbox/internal/testutil"
)

// sourceTree makes a tree with the modes vfs shows (0644 files, 0755
// directories), symlinks, a hard link and a file spanning many reads.
func sourceTree(t *testing.T) string {
	t.Helper()
	src := t.TempDir()
	big := make([]byte, 3<<20+17)
	rand.Read(big)
	files := map[string][]byte{
		"a.txt":           []byte("hello\n"),
		"empty":           nil,
		"dir/b.txt":       []byte("b\n"),
		"dir/sub/c.bin":   big,
		"dir/sub/d e.txt": []byte("spaces\n"),
	}
	for name, data := range files {
		p := filepath.Join(src, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, data, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	must(t, os.Symlink("a.txt", filepath.Join(src, "link-a")))
	must(t, os.Symlink("../a.txt", filepath.Join(src, "dir/link-up")))
	must(t, os.Symlink("nowhere", filepath.Join(src, "dangling")))
	must(t, os.Link(filepath.Join(src, "dir/b.txt"), filepath.Join(src, "hard-b")))
	run(t, src, "chmod", "-R", "u=rwX,go=rX", ".")
	return src
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

// canonicalTar archives dir so that two trees with the same names, types,
// contents and link targets give the same bytes. Hard links are stored as
// files: vfs shows each name as its own node.
func canonicalTar(t *testing.T, dir string) []byte {
	t.Helper()
	return []byte(run(t, dir, "tar", "-c", "-f", "-", "--sort=name", "--hard-dereference", "--mtime=@0",
		"--owner=0", "--group=0", "--numeric-owner", "--format=gnu", "."))
}

func TestTarRoundTrip(t *testing.T) {
	src := sourceTree(t)
	mnt, _ := mount(t, vfstest.NewMemFS(nil), false, vfs.Options{})
	archive := filepath.Join(t.TempDir(), "src.tar")
	run(t, src, "tar", "-c", "-f", archive, ".")
	run(t, mnt, "tar", "-x", "-f", archive)
	if !bytes.Equal(canonicalTar(t, src), canonicalTar(t, mnt)) {
		t.Fatal("the tree read back from the mount differs from the source")
	}
	if target, err := os.Readlink(filepath.Join(mnt, "dir/link-up")); err != nil || target != "../a.txt" {
		t.Errorf("readlink = %q, %v", target, err)
	}
}

func TestCopyArchive(t *testing.T) {
	src := sourceTree(t)
	mnt, _ := mount(t, vfstest.NewMemFS(nil), false, vfs.Options{})
	run(t, mnt, "cp", "-a", src+"/.", "copy")
	run(t, mnt, "diff", "-r", "--no-dereference", src, "copy")
	// And back out again.
	out := t.TempDir()
	run(t, mnt, "cp", "-a", "copy/.", out)
	run(t, out, "diff", "-r", "--no-dereference", src, out)
}

func TestGit(t *testing.T) {
	testutil.Need(t, "git", "git")
	mnt, _ := mount(t, vfstest.NewMemFS(nil), false, vfs.Options{})
	git := func(args ...string) string {
		return run(t, mnt, "git", append([]string{"-c", "user.name=t", "-c", "user.email=t@example.invalid", "-c", "init.defaultBranch=main"}, args...)...)
	}
	git("init", "-q", "repo")
	run(t, mnt, "sh", "-c", "echo hi > repo/README && mkdir repo/src && echo 'int main(){return 0;}' > repo/src/main.c")
	git("-C", "repo", "add", ".")
	git("-C", "repo", "commit", "-q", "-m", "first")
	if status := git("-C", "repo", "status", "--porcelain"); status != "" {
		t.Errorf("git status after commit:\n%s", status)
	}
	run(t, mnt, "sh", "-c", "echo changed > repo/README")
	if status := git("-C", "repo", "status", "--porcelain"); strings.TrimSpace(status) != "M README" {
		t.Errorf("git status after a change = %q", status)
	}
	git("-C", "repo", "fsck", "--strict")
}

func TestSQLite(t *testing.T) {
	testutil.Need(t, "sqlite3", "sqlite3")
	mnt, _ := mount(t, vfstest.NewMemFS(nil), false, vfs.Options{})
	run(t, mnt, "sqlite3", "db", "create table t(x); insert into t select value from generate_series(1, 5000);")
	run(t, mnt, "sqlite3", "db", "begin; update t set x = x * 2; commit;")
	if got := strings.TrimSpace(run(t, mnt, "sqlite3", "db", "select count(*), sum(x) from t;")); got != "5000|25005000" {
		t.Errorf("select = %q", got)
	}
	if got := strings.TrimSpace(run(t, mnt, "sqlite3", "db", "pragma integrity_check;")); got != "ok" {
		t.Errorf("integrity_check = %q", got)
	}
}

func TestXattrTools(t *testing.T) {
	testutil.Need(t, "setfattr", "attr")
	mnt, _ := mount(t, vfstest.NewMemFS(map[string]string{"f": "x"}), false, vfs.Options{})
	run(t, mnt, "setfattr", "-n", "user.color", "-v", "blue", "f")
	run(t, mnt, "setfattr", "-n", "user.big", "-v", "0x"+strings.Repeat("ab", 10000), "f")
	if got := run(t, mnt, "getfattr", "--only-values", "-n", "user.color", "f"); got != "blue" {
		t.Errorf("getfattr = %q", got)
	}
	if got := run(t, mnt, "getfattr", "-d", "--absolute-names", "f"); !strings.Contains(got, `user.color="blue"`) || !strings.Contains(got, "user.big=") {
		t.Errorf("getfattr -d = %q", got)
	}
	run(t, mnt, "setfattr", "-x", "user.color", "f")
	if got := run(t, mnt, "getfattr", "-d", "f"); strings.Contains(got, "user.color") {
		t.Errorf("after removal: %q", got)
	}
}
