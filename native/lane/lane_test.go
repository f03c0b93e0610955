package lane_test

import (
	"context"
	"os"
	"path/filepath"
	"slices"
	"strconv"
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

// TestConcurrentRuns checks that runs overlap in the guest: every command
// has started before any has ended. Timestamps from the guest's own clock,
// so a loaded host cannot fail it or pass it by accident.
func TestConcurrentRuns(t *testing.T) {
	l := boot(t)
	var (
		wg           sync.WaitGroup
		mu           sync.Mutex
		starts, ends []int64
	)
	for _, word := range []string{"a", "b", "c"} {
		wg.Go(func() {
			code, out := run(t, l, "sh", "-c", "date +%s%N; sleep 1; date +%s%N; echo "+word)
			fields := strings.Fields(out)
			if code != 0 || len(fields) != 3 || fields[2] != word {
				t.Errorf("got %d %q", code, out)
				return
			}
			start, err1 := strconv.ParseInt(fields[0], 10, 64)
			end, err2 := strconv.ParseInt(fields[1], 10, 64)
			if err1 != nil || err2 != nil {
				t.Errorf("timestamps %q", out)
				return
			}
			mu.Lock()
			starts, ends = append(starts, start), append(ends, end)
			mu.Unlock()
		})
	}
	wg.Wait()
	if len(starts) == 3 && slices.Max(starts) >= slices.Min(ends) {
		t.Errorf("a command ended (%d) before the last one started (%d): runs are not concurrent", slices.Min(ends), slices.Max(starts))
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
