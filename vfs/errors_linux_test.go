package vfs_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/torkbot/sandbox/vfs"
	"github.com/torkbot/sandbox/vfs/vfstest"
)

// sys runs one system call on the mount in a child process (the test
// binary again, as TestHelperSyscall) and returns the errno's name, or
// "OK". The child must finish within limit: a hang fails the test.
func sys(t *testing.T, dir string, limit time.Duration, op string, args ...string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), limit)
	defer cancel()
	cmd := helperCmd(ctx, dir, op, args...)
	out, err := cmd.CombinedOutput()
	if ctx.Err() != nil {
		t.Fatalf("%s %v: still running after %v", op, args, limit)
	}
	if err != nil {
		t.Fatalf("%s %v: %v\n%s", op, args, err, out)
	}
	return strings.TrimSpace(string(out))
}

// helperCmd is a TestHelperSyscall child that runs op in dir. The child
// changes to dir itself, after exec (see run). Under -race it skips the
// race runtime's 1 s pause at exit.
func helperCmd(ctx context.Context, dir, op string, args ...string) *exec.Cmd {
	cmd := exec.CommandContext(ctx, os.Args[0], append([]string{"-test.run=^TestHelperSyscall$", "--", dir, op}, args...)...)
	cmd.Env = append(os.Environ(), "VFS_HELPER_SYSCALL=1", "GORACE=atexit_sleep_ms=0")
	return cmd
}

// TestHelperSyscall is the child of sys, not a test.
func TestHelperSyscall(t *testing.T) {
	if os.Getenv("VFS_HELPER_SYSCALL") == "" {
		t.Skip("helper process: runs only as the child that sys() starts")
	}
	args := os.Args
	for i, a := range args {
		if a == "--" {
			args = args[i+1:]
			break
		}
	}
	if args[0] != "" {
		if err := os.Chdir(args[0]); err != nil {
			fmt.Println(errnoName(err))
			os.Exit(0)
		}
	}
	fmt.Println(errnoName(doSyscall(args[1], args[2:])))
	os.Exit(0)
}

func doSyscall(op string, args []string) error {
	var st unix.Stat_t
	switch op {
	case "stat":
		return unix.Lstat(args[0], &st)
	case "mkdir":
		return unix.Mkdir(args[0], 0o755)
	case "rmdir":
		return unix.Rmdir(args[0])
	case "unlink":
		return unix.Unlink(args[0])
	case "rename":
		return unix.Rename(args[0], args[1])
	case "symlink":
		return unix.Symlink(args[0], args[1])
	case "link":
		return unix.Link(args[0], args[1])
	case "getxattr":
		_, err := unix.Lgetxattr(args[0], args[1], make([]byte, 256))
		return err
	case "setxattr":
		return unix.Lsetxattr(args[0], args[1], []byte("v"), 0)
	case "removexattr":
		return unix.Lremovexattr(args[0], args[1])
	case "truncate":
		return unix.Truncate(args[0], 0)
	case "utimes":
		return unix.UtimesNano(args[0], make([]unix.Timespec, 2))
	case "chmod":
		return unix.Chmod(args[0], 0o600)
	case "create":
		fd, err := unix.Open(args[0], unix.O_CREAT|unix.O_EXCL|unix.O_WRONLY, 0o644)
		if err == nil {
			unix.Close(fd)
		}
		return err
	case "openw":
		fd, err := unix.Open(args[0], unix.O_WRONLY, 0)
		if err == nil {
			unix.Close(fd)
		}
		return err
	case "read":
		fd, err := unix.Open(args[0], unix.O_RDONLY, 0)
		if err != nil {
			return err
		}
		defer unix.Close(fd)
		_, err = unix.Read(fd, make([]byte, 4096))
		return err
	}
	return fmt.Errorf("unknown op %q", op)
}

func errnoName(err error) string {
	var errno syscall.Errno
	switch {
	case err == nil:
		return "OK"
	case errors.As(err, &errno):
		return unix.ErrnoName(errno)
	}
	return err.Error()
}

// expect checks what a list of system calls answers: each entry is the
// errno name wanted and the call.
func expect(t *testing.T, dir string, calls [][]string) {
	t.Helper()
	for _, c := range calls {
		if got := sys(t, dir, 20*time.Second, c[1], c[2:]...); got != c[0] {
			t.Errorf("%s %v = %s, want %s", c[1], c[2:], got, c[0])
		}
	}
}

// TestReadOnlyMount: a read-only backend can be read, and refuses every
// mutation with EROFS: refused by the server itself when the mount is
// read-write, and by the kernel when it is MS_RDONLY.
func TestReadOnlyMount(t *testing.T) {
	for _, msRdonly := range []bool{false, true} {
		t.Run(fmt.Sprintf("MS_RDONLY=%v", msRdonly), func(t *testing.T) {
			fsys := vfstest.ReadOnly{FS: vfstest.NewMemFS(map[string]string{"f": "data", "d/g": "x"})}
			mnt, _ := mount(t, fsys, msRdonly, vfs.Options{})
			expect(t, mnt, [][]string{
				{"OK", "stat", "f"},
				{"OK", "read", "d/g"},
				{"ENOENT", "stat", "nope"},
				{"EROFS", "create", "new"},
				{"EROFS", "create", "d/new"},
				{"EROFS", "openw", "f"},
				{"EROFS", "truncate", "f"},
				{"EROFS", "mkdir", "e"},
				{"EROFS", "rmdir", "d"},
				{"EROFS", "unlink", "f"},
				{"EROFS", "rename", "f", "f2"},
				{"EROFS", "symlink", "f", "s"},
				{"EROFS", "link", "f", "h"},
				{"EROFS", "setxattr", "f", "user.x"},
				{"EROFS", "removexattr", "f", "user.x"},
				{"EROFS", "utimes", "f"},
				{"EROFS", "chmod", "f"},
			})
			// Nothing changed, and it is all still readable.
			if got := run(t, mnt, "find", ".", "-print"); got != ".\n./d\n./d/g\n./f\n" && !sameLines(got, ".\n./d\n./d/g\n./f\n") {
				t.Errorf("tree after refused writes:\n%s", got)
			}
			if got := run(t, mnt, "cat", "f", "d/g"); got != "datax" {
				t.Errorf("cat = %q", got)
			}
		})
	}
}

func sameLines(a, b string) bool {
	x, y := strings.Fields(a), strings.Fields(b)
	slices.Sort(x)
	slices.Sort(y)
	return slices.Equal(x, y)
}

// errnoCarrier is an error that is not a syscall.Errno but carries one.
type errnoCarrier struct{ errno syscall.Errno }

func (e errnoCarrier) Error() string        { return "carrier: " + e.errno.Error() }
func (e errnoCarrier) Errno() syscall.Errno { return e.errno }

// TestErrnoMapping: an errno the backend returns, bare, wrapped or carried
// by an Errno method, is what the guest's system call and tools see; an
// error without one is EIO.
func TestErrnoMapping(t *testing.T) {
	mem := vfstest.NewMemFS(map[string]string{"f": "x", "full/g": "y", "noperm/h": "z"})
	fsys := vfstest.Hooked{FS: mem, Before: func(ctx context.Context, op, path string) error {
		switch op + " " + path {
		case "stat /eacces", "getxattr /noperm":
			return syscall.EACCES
		case "stat /wrapped":
			return fmt.Errorf("remote: %w", syscall.ENOENT)
		case "stat /carried":
			return errnoCarrier{syscall.EACCES}
		case "stat /plain", "mkdir /plaindir", "getxattr /f":
			return errors.New("backend broke, no errno")
		case "stat /bigerrno":
			return syscall.Errno(600) // not an errno the kernel takes
		case "mkdir /racy":
			return syscall.EEXIST // created behind the guest's back
		case "rmdir /full":
			return fmt.Errorf("rmdir: %w", syscall.ENOTEMPTY)
		}
		return nil
	}}
	var log strings.Builder
	var logMu sync.Mutex
	mnt, _ := mount(t, fsys, false, vfs.Options{CacheTimeout: -1, Log: lockedWriter{&logMu, &log}})
	expect(t, mnt, [][]string{
		{"ENOENT", "stat", "missing"},
		{"ENOENT", "stat", "wrapped"},
		{"EACCES", "stat", "eacces"},
		{"EACCES", "stat", "carried"},
		{"EIO", "stat", "plain"},
		{"EIO", "stat", "bigerrno"},
		{"EEXIST", "mkdir", "f"}, // the kernel knows, from LOOKUP
		{"EEXIST", "mkdir", "racy"},
		{"EIO", "mkdir", "plaindir"},
		{"ENOTEMPTY", "rmdir", "full"},
		{"ENOTDIR", "rmdir", "f"},
		{"ENODATA", "getxattr", "full", "user.none"},
		{"EACCES", "getxattr", "noperm", "user.x"},
		{"EIO", "getxattr", "f", "user.x"},
		{"OK", "stat", "f"}, // and the mount still works
	})
	// The tools say the same.
	for _, c := range []struct{ want, tool string }{
		{"No such file or directory", "stat missing"},
		{"Permission denied", "stat eacces"},
		{"Input/output error", "stat plain"},
		{"File exists", "mkdir racy"},
		{"Directory not empty", "rmdir full"},
		{"No such attribute", "getfattr -n user.none full"},
	} {
		out, err := exec.Command("sh", "-c", "cd "+mnt+" && "+c.tool).CombinedOutput()
		if err == nil || !strings.Contains(string(out), c.want) {
			t.Errorf("%s: %v, %q; want %q", c.tool, err, out, c.want)
		}
	}
	logMu.Lock()
	defer logMu.Unlock()
	if !strings.Contains(log.String(), "backend broke, no errno") {
		t.Errorf("errors without errno are not logged; log:\n%s", log.String())
	}
}

type lockedWriter struct {
	mu *sync.Mutex
	w  *strings.Builder
}

func (l lockedWriter) Write(b []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(b)
}

// TestCallTimeout: a backend call that outlives Options.CallTimeout fails
// with EIO soon after, whether or not the backend heeds its ctx, and the
// mount goes on working.
func TestCallTimeout(t *testing.T) {
	release := make(chan struct{})
	t.Cleanup(func() { close(release) })
	fsys := vfstest.Hooked{FS: vfstest.NewMemFS(map[string]string{"f": "x"}), Before: func(ctx context.Context, op, path string) error {
		switch op + " " + path {
		case "stat /deaf": // ignores ctx
			<-release
		case "stat /polite", "read /f":
			<-ctx.Done()
			return ctx.Err()
		}
		return nil
	}}
	const timeout = 300 * time.Millisecond
	mnt, _ := mount(t, fsys, false, vfs.Options{CallTimeout: timeout, CacheTimeout: -1})
	for _, c := range [][]string{{"stat", "deaf"}, {"stat", "polite"}, {"read", "f"}} {
		start := time.Now()
		if got := sys(t, mnt, 10*time.Second, c[0], c[1:]...); got != "EIO" {
			t.Errorf("%v = %s, want EIO", c, got)
		}
		// The child's own start-up is part of it.
		if d := time.Since(start); d > timeout+3*time.Second {
			t.Errorf("%v took %v with CallTimeout %v", c, d, timeout)
		}
	}
	expect(t, mnt, [][]string{{"OK", "stat", "f"}})
}

// TestServerDies: when the server stops mid-session, a guest operation
// waiting for it and every later one fail promptly (ENOTCONN, or
// ECONNABORTED for the one in flight) rather than hang, and the mount can
// be taken down.
func TestServerDies(t *testing.T) {
	entered := make(chan struct{}, 1)
	release := make(chan struct{})
	t.Cleanup(func() { close(release) })
	fsys := vfstest.Hooked{FS: vfstest.NewMemFS(map[string]string{"f": "x"}), Before: func(ctx context.Context, op, path string) error {
		if path == "/hang" {
			entered <- struct{}{}
			<-release // and ignores ctx
		}
		return nil
	}}
	var mnt string
	t.Cleanup(func() {
		// After mount's own clean-up (cleanups run last first).
		if mounted(t, mnt) {
			t.Errorf("%s is still mounted", mnt)
		}
	})
	// Without caching, so that every later operation asks the server.
	mnt, stopServer := mount(t, fsys, false, vfs.Options{CacheTimeout: -1})
	expect(t, mnt, [][]string{{"OK", "stat", "f"}})

	result := make(chan string, 1)
	go func() {
		// Not sys: it must not fail the test from this goroutine.
		out, _ := helperCmd(context.Background(), mnt, "stat", "hang").CombinedOutput()
		result <- strings.TrimSpace(string(out))
	}()
	select {
	case <-entered:
	case <-time.After(20 * time.Second):
		t.Fatal("the stat never reached the backend")
	}
	stopServer()
	select {
	case got := <-result:
		if got != "ENOTCONN" && got != "ECONNABORTED" && got != "EIO" {
			t.Errorf("the stat in flight when the server died = %s", got)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the stat in flight hangs after the server died")
	}
	for _, c := range [][]string{{"stat", "f"}, {"stat", "other"}, {"create", "new"}, {"read", "f"}} {
		if got := sys(t, mnt, 10*time.Second, c[0], c[1:]...); got != "ENOTCONN" && got != "EIO" {
			t.Errorf("%v after the server died = %s, want ENOTCONN", c, got)
		}
	}
}

// mounted says whether dir is a mount point.
func mounted(t *testing.T, dir string) bool {
	data, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(data), "\n") {
		if f := strings.Fields(line); len(f) > 4 && f[4] == dir {
			return true
		}
	}
	return false
}

// TestConcurrentRenames: four shells move the same files and directories
// around three directories at once. Renames that lose a race fail with
// ENOENT, nothing else fails, and afterwards every file and directory is
// in exactly one place, with its contents.
func TestConcurrentRenames(t *testing.T) {
	files := map[string]string{}
	var names []string
	for i := range 8 {
		n := fmt.Sprintf("f%d", i)
		files["A/"+n] = n + "\n"
		names = append(names, n)
	}
	for i := range 3 {
		n := fmt.Sprintf("d%d", i)
		files["A/"+n+"/inner"] = n + "\n"
		names = append(names, n)
	}
	mem := vfstest.NewMemFS(files)
	must(t, mem.Mkdir(context.Background(), "/B"))
	must(t, mem.Mkdir(context.Background(), "/C"))
	mnt, _ := mount(t, mem, false, vfs.Options{})

	const rounds = 6
	moves := []string{"A B", "B C", "C A"}
	var wg sync.WaitGroup
	errFiles := make([]string, 4)
	for shell := range 4 {
		errFiles[shell] = filepath.Join(t.TempDir(), "err")
		// Each shell goes through the names and moves in its own order.
		order := slices.Clone(names)
		if shell%2 == 1 {
			slices.Reverse(order)
		}
		pairs := append(slices.Clone(moves[shell%3:]), moves[:shell%3]...)
		script := fmt.Sprintf(`for r in $(seq %d); do for n in %s; do for p in %s; do set -- $p; mv -T "$1/$n" "$2/$n" 2>>%s; done; done; done; true`,
			rounds, strings.Join(order, " "), `"`+strings.Join(pairs, `" "`)+`"`, errFiles[shell])
		wg.Go(func() {
			cmd := exec.Command("env", "-C", mnt, "sh", "-c", script) // see run
			if out, err := cmd.CombinedOutput(); err != nil {
				t.Errorf("shell %d: %v\n%s", shell, err, out)
			}
		})
	}
	wg.Wait()
	for shell, name := range errFiles {
		data, err := os.ReadFile(name)
		if err != nil && !os.IsNotExist(err) {
			t.Fatal(err)
		}
		for line := range strings.Lines(string(data)) {
			if !strings.Contains(line, "No such file or directory") {
				t.Errorf("shell %d: %s", shell, line)
			}
		}
	}

	// Every name exactly once, read through the mount and in the backend.
	for _, list := range []string{
		run(t, mnt, "sh", "-c", "ls -1 A B C | grep -v -e : -e '^$'"),
		strings.Join(backendNames(t, mem), "\n"),
	} {
		got := strings.Fields(list)
		slices.Sort(got)
		want := slices.Sorted(slices.Values(names))
		if !slices.Equal(got, want) {
			t.Errorf("names after the renames: %v, want %v", got, want)
		}
	}
	for _, n := range names {
		path := "A/" + n
		for _, d := range []string{"B", "C"} {
			if _, err := mem.Stat(context.Background(), "/"+d+"/"+n); err == nil {
				path = d + "/" + n
			}
		}
		if strings.HasPrefix(n, "d") {
			path += "/inner"
		}
		if got := run(t, mnt, "cat", path); got != n+"\n" {
			t.Errorf("%s = %q", path, got)
		}
	}
}

func backendNames(t *testing.T, mem *vfstest.MemFS) []string {
	var names []string
	for _, d := range []string{"/A", "/B", "/C"} {
		entries, err := mem.List(context.Background(), d)
		if err != nil {
			t.Fatal(err)
		}
		for _, e := range entries {
			names = append(names, e.Name)
		}
	}
	return names
}
