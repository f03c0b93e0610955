package krun_test

import (
	"bytes"
	"context"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/torkbot/sandbox/vmm/vmmtest"

	"github.com/torkbot/sandbox/blockstore/nbd"
	"github.com/torkbot/sandbox/blockstore/qcow2"
	"github.com/torkbot/sandbox/bootparams"
	"github.com/torkbot/sandbox/control"
	"github.com/torkbot/sandbox/internal/sockpair"
	"github.com/torkbot/sandbox/internal/testutil"
	"github.com/torkbot/sandbox/native/lane"
	"github.com/torkbot/sandbox/vfs/vfstest"
	"github.com/torkbot/sandbox/vmm"
	"github.com/torkbot/sandbox/vmm/krun/nbdrelay"
	"github.com/torkbot/sandbox/vmm/qemu"
)

// The guest half of the libkrun engine runs here in real VMs on the QEMU
// engine (libkrun cannot run on these machines): the same guest kernel
// and sandbox-init, with the transports QEMU offers.

func qemuEngine(t *testing.T, kernel, initrd string) *qemu.Engine {
	e, err := qemu.New(context.Background(), qemu.Options{Path: os.Getenv("PATH"), Env: os.Environ()}, kernel, initrd)
	if err != nil {
		t.Skipf("QEMU engine unavailable: %v", err)
	}
	return e
}

// TestGuestPaths runs the guest-side tests of the vsock channel transport
// (against vsock_loopback) and of the NBD attach with reconnect (against
// the kernel's nbd driver) inside a VM, as root: both test binaries are
// served to the guest on a host filesystem and run there with
// SANDBOX_GUEST_TEST=1.
func TestGuestPaths(t *testing.T) {
	if testing.Short() {
		t.Skip("boots a VM")
	}
	dir := vmmtest.Artifacts(t)
	kernel, initrd := filepath.Join(dir, "kernel/vmlinux"), filepath.Join(dir, "kernel/initrd.cpio")
	engine := qemuEngine(t, kernel, initrd)
	files := map[string]string{}
	for name, pkg := range map[string]string{"channel.test": "../../sandbox-init/channel", "nbdattach.test": "../../sandbox-init/nbdattach"} {
		out := filepath.Join(t.TempDir(), name)
		cmd := exec.Command("go", "test", "-c", "-trimpath", "-ldflags=-s -w", "-o", out, pkg)
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
		if b, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("go test -c %s: %v\n%s", pkg, err, b)
		}
		b, err := os.ReadFile(out)
		if err != nil {
			t.Fatal(err)
		}
		files[name] = string(b)
	}
	l, err := lane.Boot(context.Background(), lane.Config{
		Engine: engine, Kernel: kernel, Initrd: initrd, Env: os.Environ(), TempDir: t.TempDir(),
		RootDisk:    vmm.Disk{Path: filepath.Join(dir, "images/debian-13-slim.qcow2"), Format: "qcow2", ReadOnly: true},
		CPUs:        1,
		MemoryMiB:   256,
		BootTimeout: time.Minute,
		Mounts:      []lane.Mount{{Target: "/workspace", FS: vfstest.NewMemFS(files)}},
		Log:         os.Stderr,
	})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close(context.Background())
	for _, tc := range []struct{ binary, run string }{
		{"channel.test", "TestVsockLoopbackInGuest"},
		{"nbdattach.test", "TestAttachReconnectInGuest"},
	} {
		t.Run(tc.run, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
			defer cancel()
			script := "cp /workspace/" + tc.binary + " /tmp/ && chmod +x /tmp/" + tc.binary +
				" && SANDBOX_GUEST_TEST=1 /tmp/" + tc.binary + " -test.v -test.count=1 -test.run '^" + tc.run + "$'"
			var mu sync.Mutex
			var out strings.Builder
			code, err := l.Run(ctx, control.Command{Name: "sh", Args: []string{"-c", script}}, func(_ control.FD, b []byte) {
				mu.Lock()
				out.Write(b)
				mu.Unlock()
			})
			mu.Lock()
			defer mu.Unlock()
			if err != nil || code != 0 || !strings.Contains(out.String(), "--- PASS: "+tc.run) {
				t.Fatalf("in the guest: exit %d, %v\n%s", code, err, out.String())
			}
			t.Logf("guest output:\n%s", out.String())
		})
	}
}

// TestRootOverNBDChannel boots a guest whose root file system comes the way
// it does under libkrun: sandbox.root=nbd:disk, so init attaches /dev/nbd0
// over the channel "disk", whose host end is the helper's NBD relay
// (nbdrelay) in front of the host's NBD server (blockstore/nbd) serving the
// built-in image. The channel is a virtio-serial port here (init bridges
// it to a socket for the nbd driver); under libkrun it is a vsock stream.
func TestRootOverNBDChannel(t *testing.T) {
	if testing.Short() {
		t.Skip("boots a VM")
	}
	dir := vmmtest.Artifacts(t)
	kernel, initrd := filepath.Join(dir, "kernel/vmlinux"), filepath.Join(dir, "kernel/initrd.cpio")
	engine := qemuEngine(t, kernel, initrd)
	image := filepath.Join(dir, "images/debian-13-slim.qcow2")
	f, err := os.Open(image)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	st, _ := f.Stat()
	img, err := qcow2.Open(f, st.Size())
	if err != nil {
		t.Fatal(err)
	}

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var wg sync.WaitGroup
	defer wg.Wait()
	defer cancel()
	// Host NBD server ↔ relay, as in the helper.
	srv, cli := net.Pipe()
	wg.Go(func() {
		nbd.Serve(ctx, srv, nbd.ReaderAtDevice{R: img, N: img.Size()}, nbd.Options{Name: "root", ReadOnly: true})
	})
	relay, err := nbdrelay.Open(cli, "root")
	if err != nil {
		t.Fatal(err)
	}
	wg.Go(func() { relay.Run(ctx) })

	diskHost, diskVM := testutil.SocketPair(t)
	controlHost, controlVM := testutil.SocketPair(t)
	defer controlHost.Close()
	wg.Go(func() {
		c, err := sockpair.FileConn(diskHost)
		if err != nil {
			t.Error(err)
			return
		}
		relay.ServeGuest(ctx, c)
	})
	var console vmm.OutputBuffer
	// QEMU still gets the image as /dev/vda (the QEMU engine always attaches
	// a root disk); the guest does not use it.
	m, err := engine.Start(context.Background(), vmm.Spec{
		Kernel: kernel, Initrd: initrd, CPUs: 1, MemoryMiB: 256,
		Boot:     bootparams.Params{RootNBD: "disk"},
		RootDisk: vmm.Disk{Path: image, Format: "qcow2", ReadOnly: true},
		Channels: []vmm.Channel{{Name: "control", Conn: controlVM}, {Name: "disk", Conn: diskVM}},
		Console:  &console,
		Env:      os.Environ(),
		TempDir:  t.TempDir(),
	})
	if err != nil {
		t.Fatal(err)
	}
	client, err := control.NewClient(controlHost)
	if err != nil {
		m.Kill()
		<-m.Done()
		t.Fatal(err)
	}
	defer func() {
		// The VMM first: a client closing on a live guest waits for it.
		m.Kill()
		<-m.Done()
		client.Close()
	}()
	hctx, hcancel := context.WithTimeout(ctx, time.Minute)
	defer hcancel()
	if _, err := client.Handshake(hctx, control.Setup{}); err != nil {
		t.Fatalf("handshake: %v\nconsole:\n%s", err, console.String())
	}
	var out bytes.Buffer
	code, err := client.Run(hctx, control.Command{Name: "sh", Args: []string{"-c", "grep ' / ' /proc/mounts; cat /etc/debian_version >/dev/null && echo readable"}},
		func(_ control.FD, b []byte) { out.Write(b) })
	if err != nil || code != 0 {
		t.Fatalf("exit %d, %v: %s\nconsole:\n%s", code, err, out.String(), console.String())
	}
	if !strings.HasPrefix(out.String(), "/dev/nbd0 / ext4 ro") || !strings.Contains(out.String(), "readable") {
		t.Errorf("root is not the NBD device:\n%s\nconsole:\n%s", out.String(), console.String())
	}
	if !strings.Contains(console.String(), `attached over channel "disk"`) {
		t.Errorf("console does not tell the attach:\n%s", console.String())
	}
	client.Shutdown(hctx)
}
