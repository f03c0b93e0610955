package qemu

import (
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/torkbot/sandbox/internal/testutil"
	"github.com/torkbot/sandbox/vmm"
	"github.com/torkbot/sandbox/vmm/vmmtest"
)

func TestArgs(t *testing.T) {
	e := &Engine{binary: "/usr/bin/qemu-system-x86_64", accel: AccelTCG}
	args, _ := e.args(vmm.Spec{
		Kernel: "/k/vmlinux", Initrd: "/k/initrd.cpio",
		CPUs: 2, MemoryMiB: 768,
		RootDisk: vmm.Disk{Path: "/img/a,b.qcow2", Format: "qcow2", ReadOnly: true},
		Channels: []vmm.Channel{{Name: "control"}, {Name: "fs.0"}},
	}, "sandbox.v=1 sandbox.rootmode=rw")
	joined := strings.Join(args, " ")
	for _, want := range []string{
		"-accel tcg", "-M microvm,acpi=off", "-m 768", "-smp 2", "-no-reboot",
		"-kernel /k/vmlinux", "-initrd /k/initrd.cpio",
		// A comma in a path is doubled: QEMU's option syntax.
		"-drive file=/img/a,,b.qcow2,format=qcow2,if=none,id=root,readonly=on",
		"-chardev socket,id=ch0,fd=3 -device virtserialport,chardev=ch0,name=control",
		"-chardev socket,id=ch1,fd=4 -device virtserialport,chardev=ch1,name=fs.0",
	} {
		if !strings.Contains(joined, want) {
			t.Errorf("args lack %q:\n%s", want, joined)
		}
	}
	cmdline := args[slices.Index(args, "-append")+1]
	// reboot=t: init ends the VM with a reset (sandbox-init/shutdown.go).
	if !strings.HasSuffix(cmdline, " sandbox.v=1 sandbox.rootmode=rw") || !strings.Contains(cmdline, " tsc_early_khz=") || !strings.Contains(cmdline, "panic=-1") || !strings.Contains(cmdline, " reboot=t ") {
		t.Errorf("cmdline %q", cmdline)
	}
	if strings.Contains(cmdline, "noapictimer") {
		t.Errorf("cmdline %q has noapictimer, which leaves the guest without a one-shot timer", cmdline)
	}
	if slices.Contains(args, "-cpu") {
		t.Errorf("TCG args ask for a CPU model: %s", joined)
	}

	nic, _ := (&Engine{accel: AccelTCG}).args(vmm.Spec{
		CPUs: 1, MemoryMiB: 256, RootDisk: vmm.Disk{Format: "raw"},
		Channels: []vmm.Channel{{Name: "control"}},
		NIC:      os.Stdin, NICMTU: 65520,
	}, "sandbox.v=1")
	// The NIC's fd follows the channels' in ExtraFiles.
	if j := strings.Join(nic, " "); !strings.Contains(j, "-netdev stream,id=net0,server=off,addr.type=fd,addr.str=4") ||
		!strings.Contains(j, "virtio-net-device,netdev=net0,mac=52:54:00:12:34:56,host_mtu=65520") {
		t.Errorf("NIC args: %s", j)
	}

	disk, ch, nicFile := os.NewFile(100, "disk"), os.NewFile(101, "control"), os.NewFile(102, "nic")
	args, files := (&Engine{accel: AccelTCG}).args(vmm.Spec{
		CPUs: 1, MemoryMiB: 256,
		RootDisk: vmm.Disk{ReadOnly: true, NBD: disk},
		Channels: []vmm.Channel{{Name: "control", Conn: ch}},
		NIC:      nicFile, NICMTU: 1500,
	}, "sandbox.v=1")
	nbdArgs := strings.Join(args, " ")
	// Each fd number names the file at that place in ExtraFiles (fd 3+i).
	if !strings.Contains(nbdArgs, "-blockdev driver=nbd,server.type=fd,server.str=3,export=root,node-name=root,read-only=on") ||
		!strings.Contains(nbdArgs, "-chardev socket,id=ch0,fd=4") ||
		!strings.Contains(nbdArgs, "addr.type=fd,addr.str=5") ||
		strings.Contains(nbdArgs, "-drive") {
		t.Errorf("NBD root args: %s", nbdArgs)
	}
	if got := files.Files(); !slices.Equal(got, []*os.File{disk, ch, nicFile}) {
		t.Errorf("ExtraFiles %v, want disk, control, nic", got)
	}

	kvm, _ := (&Engine{accel: AccelKVM}).args(vmm.Spec{CPUs: 1, MemoryMiB: 256, RootDisk: vmm.Disk{Format: "raw"}}, "sandbox.v=1")
	if !strings.Contains(strings.Join(kvm, " "), "-accel kvm") || !slices.Contains(kvm, "host") {
		t.Errorf("KVM args: %v", kvm)
	}
	if strings.Contains(strings.Join(kvm, " "), "tsc_early_khz") {
		t.Errorf("KVM guests read the TSC rate from the hypervisor; args: %v", kvm)
	}
}

// TestStartClosesSpecOnFailure: Start owns the spec's fds (vmm.Spec), so a
// start that fails, before or at the exec, closes them: the host ends see
// EOF rather than a guest that never comes.
func TestStartClosesSpecOnFailure(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "f")
	os.WriteFile(file, nil, 0o644)
	for name, tc := range map[string]struct {
		binary string
		edit   func(*vmm.Spec)
	}{
		"invalid spec":   {"/bin/true", func(s *vmm.Spec) { s.CPUs = 0 }},
		"missing kernel": {"/bin/true", func(s *vmm.Spec) { s.Kernel = filepath.Join(dir, "none") }},
		"exec fails":     {filepath.Join(dir, "no-qemu"), func(*vmm.Spec) {}},
	} {
		t.Run(name, func(t *testing.T) {
			var hosts []*os.File
			pair := func() *os.File {
				host, vm := testutil.SocketPair(t)
				hosts = append(hosts, host)
				return vm
			}
			spec := vmm.Spec{Kernel: file, Initrd: file, CPUs: 1, MemoryMiB: 128,
				RootDisk: vmm.Disk{NBD: pair()}, Channels: []vmm.Channel{{Name: "control", Conn: pair()}},
				NIC: pair(), NICMTU: 1500}
			tc.edit(&spec)
			if _, err := (&Engine{binary: tc.binary, accel: AccelTCG}).Start(t.Context(), spec); err == nil {
				t.Fatal("start succeeded")
			}
			for _, host := range hosts {
				host.SetReadDeadline(time.Now().Add(time.Second))
				if n, err := host.Read(make([]byte, 1)); n != 0 || err != io.EOF {
					t.Errorf("%s: VMM end still open after a failed start (%d, %v)", host.Name(), n, err)
				}
			}
		})
	}
}

func TestHostTSCKHz(t *testing.T) {
	// Any x86-64 host of the last decades runs its TSC between 500 MHz and 10 GHz.
	if khz := HostTSCKHz(); khz < 500_000 || khz > 10_000_000 {
		t.Errorf("host TSC rate %d kHz is implausible", khz)
	}
}

// TestProbe runs the real KVM probe against the built guest kernel: it must
// settle within its bound whatever KVM does here, and its verdict must be
// reused from the disk cache. The KVM device's presence is injected for the
// cache and no-device cases, so they are tested whatever this host has.
func TestProbe(t *testing.T) {
	artifacts := vmmtest.Artifacts(t)
	kernel, initrd := filepath.Join(artifacts, "kernel/vmlinux"), filepath.Join(artifacts, "kernel/initrd.cpio")
	binary, err := findBinary("", os.Getenv("PATH"))
	if err != nil {
		t.Skip(err)
	}
	opts := Options{ProbeCacheDir: t.TempDir(), Env: os.Environ()}
	start := time.Now()
	accel := chooseAccel(t.Context(), binary, kernel, initrd, opts)
	if took := time.Since(start); took > vmm.BootProbeTimeout+2*time.Second {
		t.Errorf("probe took %v", took)
	}
	if accel != AccelTCG && accel != AccelKVM {
		t.Fatalf("probe chose %q", accel)
	}
	t.Logf("probe chose %s in %v", accel, time.Since(start))

	// Flip the cached verdict: with a KVM device present (a file that
	// opens read-write stands for it), a fresh process (no memo) must
	// believe the disk rather than probe.
	pc := vmm.ProbeCache{Dir: opts.ProbeCacheDir, Kind: "accel"}
	key := pc.Key(binary, kernel, initrd)
	flipped := map[string]string{AccelTCG: AccelKVM, AccelKVM: AccelTCG}[accel]
	os.WriteFile(filepath.Join(opts.ProbeCacheDir, "accel-"+key), []byte(flipped+"\n"), 0o644)
	pc.Forget(key)
	opts.KVM = filepath.Join(t.TempDir(), "kvm")
	if err := os.WriteFile(opts.KVM, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if got := chooseAccel(t.Context(), binary, kernel, initrd, opts); got != flipped {
		t.Errorf("cached verdict %q ignored: got %q", flipped, got)
	}
	// No KVM device: TCG, whatever the cache says.
	opts.KVM = filepath.Join(t.TempDir(), "absent")
	if got := chooseAccel(t.Context(), binary, kernel, initrd, opts); got != AccelTCG {
		t.Errorf("without a KVM device: %q, want tcg", got)
	}
}
