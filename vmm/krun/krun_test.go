package krun_test

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/torkbot/sandbox/blockstore/nbd"
	"github.com/torkbot/sandbox/bootparams"
	"github.com/torkbot/sandbox/internal/sockpair"
	"github.com/torkbot/sandbox/internal/testutil"
	"github.com/torkbot/sandbox/vmm"
	"github.com/torkbot/sandbox/vmm/krun"
)

// The contract tests run the real helper (sandbox-krun, built here with
// cgo) against a STAND-IN libkrun.so.1 (testdata/standin_libkrun.c, built
// here with cc) that records every call. libkrun itself needs hardware
// virtualization, which these machines lack; this is the one stand-in the
// engine's tests use. The helper is built with -tags krun_standin: its
// KVM device is then the stand-in of vmm/krun/kvmtest in the state
// KRUN_STANDIN_KVM names (default usable), so these tests run the same
// whatever KVM this machine has.

// build compiles the helper and the stand-in library into a temp dir.
func build(t *testing.T, cflags ...string) (helper, library string) {
	t.Helper()
	if runtime.GOOS != "linux" {
		t.Skip("the stand-in is built as an ELF shared library")
	}
	cc, err := exec.LookPath("cc")
	if err != nil {
		t.Skip("no C compiler (cc) to build the stand-in libkrun: apt-get install gcc")
	}
	dir := t.TempDir()
	library = filepath.Join(dir, "libkrun.so.1")
	args := append([]string{"-shared", "-fPIC", "-o", library, "testdata/standin_libkrun.c"}, cflags...)
	if out, err := exec.Command(cc, args...).CombinedOutput(); err != nil {
		t.Fatalf("cc: %v\n%s", err, out)
	}
	helper = filepath.Join(dir, "sandbox-krun")
	cmd := exec.Command("go", "build", "-tags", "krun_standin", "-o", helper, "./cmd/sandbox-krun")
	cmd.Env = append(os.Environ(), "CGO_ENABLED=1")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build sandbox-krun: %v\n%s", err, out)
	}
	return helper, library
}

// memDisk is a small writable export for the host's NBD server.
type memDisk struct{ b []byte }

func (d *memDisk) Size() int64 { return int64(len(d.b)) }
func (d *memDisk) ReadAt(_ context.Context, p []byte, off int64) error {
	copy(p, d.b[off:])
	return nil
}
func (d *memDisk) WriteAt(_ context.Context, p []byte, off int64) error {
	copy(d.b[off:], p)
	return nil
}
func (d *memDisk) WriteZeroes(_ context.Context, off, n int64) error {
	clear(d.b[off : off+n])
	return nil
}
func (d *memDisk) Flush(context.Context) error { return nil }

// fixture is a spec with a NIC, two channels, a root disk over NBD, 2 vCPUs
// and 768 MiB, with the host ends served.
type fixture struct {
	spec    vmm.Spec
	console *vmm.OutputBuffer
	wg      sync.WaitGroup
}

func newFixture(t *testing.T) *fixture {
	dir := t.TempDir()
	kernel, initrd := filepath.Join(dir, "vmlinux"), filepath.Join(dir, "initrd.cpio")
	os.WriteFile(kernel, []byte("kernel"), 0o644)
	os.WriteFile(initrd, []byte("initrd"), 0o644)
	f := &fixture{console: &vmm.OutputBuffer{}}
	nicHost, nic := testutil.SocketPair(t)
	t.Cleanup(func() { nicHost.Close() })
	diskHost, disk := testutil.SocketPair(t)
	f.spec = vmm.Spec{
		Kernel: kernel, Initrd: initrd,
		Boot: bootparams.Params{Hostname: "contract", Net: &bootparams.Net{
			IP4: netip.MustParsePrefix("10.0.2.15/24"), Gateway4: netip.MustParseAddr("10.0.2.2"), MTU: 65520,
		}},
		CPUs: 2, MemoryMiB: 768,
		NIC: nic, NICMTU: 65520,
		RootDisk: vmm.Disk{ReadOnly: true, NBD: disk},
		Console:  f.console,
		Env:      os.Environ(), // the stand-in's KRUN_STANDIN_* as the test set them
		TempDir:  t.TempDir(),
	}
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(func() { cancel(); f.wg.Wait() })
	f.wg.Go(func() {
		c, err := sockpair.FileConn(diskHost)
		if err != nil {
			t.Error(err)
			return
		}
		nbd.Serve(ctx, c, &memDisk{b: make([]byte, 1<<20)}, nbd.Options{Name: "root", ReadOnly: true})
	})
	for _, name := range []string{"control", "fs.0"} {
		host, vm := testutil.SocketPair(t)
		f.spec.Channels = append(f.spec.Channels, vmm.Channel{Name: name, Conn: vm})
		f.wg.Go(func() {
			// The guest says hello; the host answers with the channel's name.
			defer host.Close()
			line, err := bufio.NewReader(host).ReadString('\n')
			if err == nil {
				fmt.Fprintf(host, "ack %s\n", name)
				t.Logf("channel %s got %q", name, line)
			}
		})
	}
	return f
}

func readLog(t *testing.T, path string) []string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return strings.Split(strings.TrimSpace(string(b)), "\n")
}

func TestContractCallSequence(t *testing.T) {
	helper, library := build(t)
	logPath := filepath.Join(t.TempDir(), "calls")
	t.Setenv("KRUN_STANDIN_LOG", logPath)
	f := newFixture(t)
	e := krun.NewUnprobed(helper, library)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	m, err := e.Start(ctx, f.spec)
	if err != nil {
		t.Fatal(err)
	}
	select {
	case <-m.Done():
	case <-time.After(30 * time.Second):
		m.Kill()
		t.Fatal("helper did not exit")
	}
	if st := m.ExitStatus(); st != "exit status 0" {
		t.Errorf("exit status %q; console:\n%s", st, f.console)
	}
	if !strings.Contains(f.console.String(), "guest console: powering off") {
		t.Errorf("console output not captured:\n%s", f.console)
	}
	cmdline := "console=ttyS0 quiet panic=-1 reboot=k cryptomgr.notests init_on_alloc=0 8250.nr_uarts=1 pci=off audit=0 lsm=capability nowatchdog" +
		" sandbox.v=1 sandbox.root=nbd:disk sandbox.hostname=contract sandbox.channels=vsock:control=1024,fs.0=1025,disk=1026" +
		" sandbox.ip=10.0.2.15/24 sandbox.gateway=10.0.2.2 sandbox.mtu=1500"
	want := []string{
		"krun_set_log_level 1",
		"krun_create_ctx",
		"krun_set_vm_config 7 2 768",
		fmt.Sprintf("krun_set_kernel 7 %s 1 %s %s", f.spec.Kernel, f.spec.Initrd, cmdline),
		"krun_disable_implicit_console 7",
		"krun_add_serial_console_default 7 -1 1",
		"krun_disable_implicit_vsock 7",
		"krun_add_vsock 7 0",
		"krun_add_vsock_port2 7 1024 1024.sock 0",
		"krun_add_vsock_port2 7 1025 1025.sock 0",
		"krun_add_vsock_port2 7 1026 1026.sock 0",
		"krun_add_net_unixstream 7 NULL socket-fd 52:54:00:12:34:56 0 0",
		"krun_start_enter 7",
		// What the stand-in's "guest" got back: each channel reaches its
		// host end, the disk port reaches the NBD relay's greeting.
		"guest 1024 read ack cont",
		"guest 1025 read ack fs.0",
		"guest 1026 read NBDMAGIC",
	}
	got := readLog(t, logPath)
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("call sequence:\n%s\n\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
}

func TestContractErrors(t *testing.T) {
	helper, library := build(t)
	for _, tc := range []struct {
		fail    string
		wantErr string
	}{
		{"krun_create_ctx=-12", "libkrun krun_create_ctx failed: cannot allocate memory (errno 12): libkrun could not create a configuration context"},
		{"krun_set_kernel=-22", "libkrun krun_set_kernel failed: invalid argument (errno 22): the kernel or initrd could not be read"},
		{"krun_set_kernel=-95", "confidential-computing build"},
		{"krun_add_vsock_port2=-17", "libkrun krun_add_vsock_port2 failed: file exists (errno 17)"},
		{"krun_add_net_unixstream=-22", "built without networking"},
	} {
		t.Run(tc.fail, func(t *testing.T) {
			t.Setenv("KRUN_STANDIN_LOG", filepath.Join(t.TempDir(), "calls"))
			t.Setenv("KRUN_STANDIN_FAIL", tc.fail)
			f := newFixture(t)
			_, err := krun.NewUnprobed(helper, library).Start(context.Background(), f.spec)
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Errorf("error %v, want one containing %q", err, tc.wantErr)
			}
		})
	}
	t.Run("start_enter refused", func(t *testing.T) {
		t.Setenv("KRUN_STANDIN_LOG", filepath.Join(t.TempDir(), "calls"))
		t.Setenv("KRUN_STANDIN_FAIL", "krun_start_enter=-22")
		f := newFixture(t)
		m, err := krun.NewUnprobed(helper, library).Start(context.Background(), f.spec)
		if err != nil {
			t.Fatal(err) // configured fine; the refusal comes after "ok"
		}
		<-m.Done()
		if !strings.Contains(m.ExitStatus(), "exit status 1") || !strings.Contains(f.console.String(), "[krun] sandbox-krun: libkrun krun_start_enter failed") ||
			!strings.Contains(f.console.String(), "/dev/kvm") {
			t.Errorf("status %q, console:\n%s", m.ExitStatus(), f.console)
		}
	})
}

func TestProbeErrors(t *testing.T) {
	helper, _ := build(t)
	_, old := build(t, "-DSTANDIN_BEFORE_1_17")
	for _, tc := range []struct {
		name, library, want string
	}{
		{"library missing", "/nonexistent/libkrun.so.1", "cannot load /nonexistent/libkrun.so.1"},
		{"library too old", old, "has no symbol krun_disable_implicit_vsock: libkrun 1.17.0 or newer is needed"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := krun.New(context.Background(), krun.Options{Helper: helper, Library: tc.library, Env: os.Environ()})
			if !errors.Is(err, krun.ErrUnavailable) || !strings.Contains(err.Error(), tc.want) || !strings.Contains(err.Error(), "SANDBOX_ENGINE=qemu") {
				t.Errorf("error %v, want ErrUnavailable containing %q and naming the fallback", err, tc.want)
			}
		})
	}
	t.Run("helper missing", func(t *testing.T) {
		_, err := krun.New(context.Background(), krun.Options{Helper: "/nonexistent/sandbox-krun"})
		if !errors.Is(err, krun.ErrHelperNotFound) || !strings.Contains(err.Error(), "SANDBOX_KRUN_HELPER") {
			t.Errorf("error %v", err)
		}
	})
}

// TestStartLeavesNothing: a failed start closes the spec's fds and removes
// the socket directory.
func TestStartLeavesNothing(t *testing.T) {
	helper, library := build(t)
	t.Setenv("KRUN_STANDIN_LOG", filepath.Join(t.TempDir(), "calls"))
	t.Setenv("KRUN_STANDIN_FAIL", "krun_set_vm_config=-22")
	tmp := t.TempDir()
	f := newFixture(t)
	f.spec.TempDir = tmp
	if _, err := krun.NewUnprobed(helper, library).Start(context.Background(), f.spec); err == nil {
		t.Fatal("start succeeded")
	}
	entries, _ := os.ReadDir(tmp)
	for _, e := range entries {
		if strings.HasPrefix(e.Name(), "krun") {
			t.Errorf("left %s behind", e.Name())
		}
	}
}

// TestStartRejectsBadSpecs: a spec the engine cannot run fails before any
// process starts, and the fds it was given are closed (it owns them).
func TestStartRejectsBadSpecs(t *testing.T) {
	dir := t.TempDir()
	kernel := filepath.Join(dir, "vmlinux")
	os.WriteFile(kernel, nil, 0o644)
	for _, tc := range []struct {
		name string
		edit func(*vmm.Spec)
		want string
	}{
		// vmm.Spec.Validate's cases are vmm's TestValidate; one shows it runs.
		{"no vCPUs", func(s *vmm.Spec) { s.CPUs = 0 }, "krun: 0 vCPUs is out of range 1..255"},
		{"disk channel taken", func(s *vmm.Spec) { s.Channels[0].Name = "disk" }, `channel "disk" given twice`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			host, ch := testutil.SocketPair(t)
			defer host.Close()
			_, disk := testutil.SocketPair(t)
			spec := vmm.Spec{Kernel: kernel, Initrd: kernel, CPUs: 1, MemoryMiB: 128,
				RootDisk: vmm.Disk{NBD: disk}, Channels: []vmm.Channel{{Name: "control", Conn: ch}}}
			tc.edit(&spec)
			_, err := krun.NewUnprobed("/nonexistent/helper", "").Start(context.Background(), spec)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %v, want %q", err, tc.want)
			}
			// The engine closed its end: the host end reads EOF.
			host.SetReadDeadline(time.Now().Add(time.Second))
			if n, err := host.Read(make([]byte, 1)); n != 0 || err == nil {
				t.Errorf("channel still open after a failed start (%d, %v)", n, err)
			}
		})
	}
}

// TestBootProbe: New boots the kernel once and accepts libkrun only when
// the kernel's "Run /init" line shows (the stand-in plays that console).
func TestBootProbe(t *testing.T) {
	helper, library := build(t)
	t.Setenv("KRUN_STANDIN_LOG", filepath.Join(t.TempDir(), "calls"))
	dir := t.TempDir()
	// Each case boots its own kernel file: verdicts are kept per kernel.
	options := func(name, cacheDir string) krun.Options {
		kernel, initrd := filepath.Join(dir, name), filepath.Join(dir, "initrd.cpio")
		os.WriteFile(kernel, []byte(name), 0o644)
		os.WriteFile(initrd, nil, 0o644)
		return krun.Options{Helper: helper, Library: library, Kernel: kernel, Initrd: initrd, ProbeCacheDir: cacheDir,
			Env: os.Environ(), TempDir: t.TempDir()}
	}
	t.Setenv("KRUN_STANDIN_CONSOLE", "[    0.5] Run /init as init process")
	_, err := krun.New(context.Background(), options("boots", ""))
	if err != nil {
		t.Fatalf("a guest that reaches init: %v", err)
	}
	t.Setenv("KRUN_STANDIN_CONSOLE", "[    0.1] real-mode setup, then nothing")
	cache := t.TempDir()
	stuck := options("stuck", cache)
	_, err = krun.New(context.Background(), stuck)
	if !errors.Is(err, krun.ErrUnavailable) || !strings.Contains(err.Error(), "did not reach init") || !strings.Contains(err.Error(), "real-mode setup") {
		t.Errorf("a guest that never reaches init: %v", err)
	}
	if files, _ := filepath.Glob(filepath.Join(cache, "krun-boot-*")); len(files) != 1 {
		t.Errorf("verdict files %q, want one", files)
	}
	// The verdict is kept: no second test boot, even if it would now pass.
	t.Setenv("KRUN_STANDIN_CONSOLE", "[    0.5] Run /init as init process")
	stuck.Env = os.Environ()
	_, err = krun.New(context.Background(), stuck)
	if !errors.Is(err, krun.ErrUnavailable) || !strings.Contains(err.Error(), "did not reach init") || !strings.Contains(err.Error(), "earlier test boot") {
		t.Errorf("a kept verdict: %v", err)
	}
}
