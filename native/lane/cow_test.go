package lane_test

import (
	"bytes"
	"context"
	"errors"
	"maps"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/torkbot/sandbox/vmm/vmmtest"

	"github.com/torkbot/sandbox/blockstore/memstore"
	"github.com/torkbot/sandbox/native/lane"
	"github.com/torkbot/sandbox/vmm"
	"github.com/torkbot/sandbox/vmm/qemu"
)

func bootCOW(t *testing.T, store *memstore.Store) *lane.Lane {
	t.Helper()
	dir := vmmtest.Artifacts(t)
	kernel, initrd := filepath.Join(dir, "kernel/vmlinux"), filepath.Join(dir, "kernel/initrd.cpio")
	engine, err := qemu.New(context.Background(), qemu.Options{Path: os.Getenv("PATH"), Env: os.Environ()}, kernel, initrd)
	if err != nil {
		t.Fatal(err)
	}
	l, err := lane.Boot(context.Background(), lane.Config{
		Engine: engine, Kernel: kernel, Initrd: initrd, Env: os.Environ(), TempDir: t.TempDir(),
		RootDisk:    vmm.Disk{Path: filepath.Join(dir, "images/debian-13-slim.qcow2"), Format: "qcow2"},
		RootStore:   store,
		CPUs:        1,
		MemoryMiB:   256,
		BootTimeout: time.Minute,
	})
	if err != nil {
		t.Fatal(err)
	}
	return l
}

// TestCOWRootPersists: a write the guest never synced itself is persisted by
// close (guest sync, remount, final flush) and seen by the next boot; with a
// store that fails, close returns a *StoreError and the store keeps its
// previous state.
func TestCOWRootPersists(t *testing.T) {
	store := memstore.New(4096)
	l := bootCOW(t, store)
	if code, out := run(t, l, "sh", "-c", "mount | grep ' / '; echo from-go > /root/go.txt"); code != 0 || !strings.Contains(out, "(rw,") {
		l.Close(context.Background())
		t.Fatalf("exit %d, output %q: want a read-write root", code, out)
	}
	if err := l.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	if len(store.Blocks()) == 0 {
		t.Fatal("close persisted nothing")
	}

	l = bootCOW(t, store)
	if code, out := run(t, l, "cat", "/root/go.txt"); code != 0 || out != "from-go\n" {
		l.Close(context.Background())
		t.Fatalf("second boot: exit %d, output %q", code, out)
	}
	before := store.Blocks()
	store.Set(true, false)
	run(t, l, "sh", "-c", "echo lost > /root/lost.txt")
	err := l.Close(context.Background())
	var se *lane.StoreError
	if !errors.As(err, &se) || !errors.Is(err, memstore.ErrInjected) {
		t.Fatalf("close with a failing store: %v, want a *lane.StoreError", err)
	}
	if !maps.EqualFunc(before, store.Blocks(), bytes.Equal) {
		t.Fatal("a failed close changed the store")
	}
}
