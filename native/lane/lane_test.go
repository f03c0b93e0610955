package lane_test

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/torkbot/sandbox/vmm/vmmtest"

	"github.com/torkbot/sandbox/control"
	"github.com/torkbot/sandbox/native/lane"
	"github.com/torkbot/sandbox/vfs/vfstest"
	"github.com/torkbot/sandbox/vmm"
	"github.com/torkbot/sandbox/vmm/qemu"
)

func boot(t *testing.T) *lane.Lane {
	t.Helper()
	dir := vmmtest.Artifacts(t)
	kernel, initrd := filepath.Join(dir, "kernel/vmlinux"), filepath.Join(dir, "kernel/initrd.cpio")
	engine, err := qemu.New(context.Background(), qemu.Options{Path: os.Getenv("PATH"), Env: os.Environ()}, kernel, initrd)
	if err != nil {
		t.Fatal(err)
	}
	l, err := lane.Boot(context.Background(), lane.Config{
		Engine: engine, Kernel: kernel, Initrd: initrd, Env: os.Environ(), TempDir: t.TempDir(),
		RootDisk:    vmm.Disk{Path: filepath.Join(dir, "images/debian-13-slim.qcow2"), Format: "qcow2", ReadOnly: true},
		CPUs:        1,
		MemoryMiB:   256,
		BootTimeout: time.Minute,
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close(context.Background()) })
	return l
}

func run(t *testing.T, l *lane.Lane, name string, args ...string) (int, string) {
	var mu sync.Mutex
	var out strings.Builder
	code, err := l.Run(context.Background(), control.Command{Name: name, Args: args}, func(_ control.FD, b []byte) {
		mu.Lock()
		out.Write(b)
		mu.Unlock()
	})
	if err != nil {
		t.Fatalf("%s %v: %v", name, args, err)
	}
	return code, out.String()
}

func TestConcurrentRuns(t *testing.T) {
	l := boot(t)
	start := time.Now()
	var wg sync.WaitGroup
	for _, word := range []string{"a", "b", "c"} {
		wg.Go(func() {
			if code, out := run(t, l, "sh", "-c", "sleep 1; echo "+word); code != 0 || out != word+"\n" {
				t.Errorf("got %d %q", code, out)
			}
		})
	}
	wg.Wait()
	if d := time.Since(start); d > 2500*time.Millisecond {
		t.Errorf("three 1 s commands took %v: not concurrent", d)
	}
}

func TestMountServedToGuest(t *testing.T) {
	dir := vmmtest.Artifacts(t)
	kernel, initrd := filepath.Join(dir, "kernel/vmlinux"), filepath.Join(dir, "kernel/initrd.cpio")
	engine, err := qemu.New(context.Background(), qemu.Options{Path: os.Getenv("PATH"), Env: os.Environ()}, kernel, initrd)
	if err != nil {
		t.Fatal(err)
	}
	fs := vfstest.NewMemFS(nil)
	l, err := lane.Boot(context.Background(), lane.Config{
		Engine: engine, Kernel: kernel, Initrd: initrd, Env: os.Environ(), TempDir: t.TempDir(),
		RootDisk:    vmm.Disk{Path: filepath.Join(dir, "images/debian-13-slim.qcow2"), Format: "qcow2", ReadOnly: true},
		CPUs:        1,
		MemoryMiB:   256,
		BootTimeout: time.Minute,
		Mounts:      []lane.Mount{{Target: "/workspace", FS: fs}},
		Log:         os.Stderr,
	})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close(context.Background())
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var out strings.Builder
	code, err := l.Run(ctx, control.Command{Name: "sh", Args: []string{"-c", "echo hi > /workspace/a.txt && cat /workspace/a.txt && ls /workspace"}},
		func(_ control.FD, b []byte) { out.Write(b) })
	if err != nil || code != 0 || out.String() != "hi\na.txt\n" {
		t.Fatalf("exit %d, output %q: %v", code, out.String(), err)
	}
}
