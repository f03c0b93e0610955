// Package qemu is the QEMU engine: a `-M microvm` guest booted straight from
// an uncompressed kernel, with the root disk on virtio-blk and named channels
// on virtio-serial ports. It runs with KVM where KVM can actually boot a
// guest and with TCG (software emulation) otherwise.
package qemu

import (
	"context"
	"errors"
	"fmt"
	"os"
	"runtime"
	"strings"

	"github.com/torkbot/sandbox/vmm"
)

// Accelerators QEMU can run a guest with.
const (
	AccelTCG = "tcg"
	AccelKVM = "kvm"
	AccelHVF = "hvf"
)

// Engine starts QEMU machines.
type Engine struct {
	binary string
	accel  string
}

var _ vmm.Engine = (*Engine)(nil)

// Options configure an Engine.
type Options struct {
	// Binary is the QEMU system emulator; empty means qemu-system-<arch> on PATH.
	Binary string
	// Accel forces an accelerator (AccelTCG, AccelKVM, AccelHVF); empty means
	// probe: KVM when it boots a guest here, TCG otherwise.
	Accel string
	// ProbeCacheDir keeps the probe's verdict across processes; empty: no cache.
	ProbeCacheDir string
	// Path is the $PATH Binary is looked up in when empty.
	Path string
	// Env is the environment of the KVM probe's QEMU (vmm.Command).
	Env []string
	// KVM is the KVM device the probe opens; empty means /dev/kvm.
	KVM string
}

// ErrNotInstalled reports that no QEMU system emulator was found.
var ErrNotInstalled = errors.New("qemu: system emulator not found")

// New finds QEMU and settles the accelerator. kernel and initrd are what the
// KVM probe boots (the same ones real guests use).
func New(ctx context.Context, opts Options, kernel, initrd string) (*Engine, error) {
	binary, err := findBinary(opts.Binary, opts.Path)
	if err != nil {
		return nil, err
	}
	accel := opts.Accel
	switch accel {
	case AccelTCG, AccelKVM:
	case AccelHVF:
		if runtime.GOOS != "darwin" {
			return nil, fmt.Errorf("qemu: accelerator %q needs macOS; use tcg or kvm on %s", accel, runtime.GOOS)
		}
	case "":
		accel = chooseAccel(ctx, binary, kernel, initrd, opts)
	default:
		return nil, fmt.Errorf("qemu: unknown accelerator %q (want tcg, kvm or hvf)", accel)
	}
	return &Engine{binary: binary, accel: accel}, nil
}

// Name implements vmm.Engine.
func (e *Engine) Name() string { return "qemu" }

// Accel is the accelerator machines of this engine run with.
func (e *Engine) Accel() string { return e.accel }

func qemuArch() (string, error) {
	switch runtime.GOARCH {
	case "amd64":
		return "x86_64", nil
	default:
		return "", fmt.Errorf("qemu: the microvm machine this engine uses needs x86_64 hosts; %s is not supported yet", runtime.GOARCH)
	}
}

func findBinary(explicit, pathList string) (string, error) {
	if explicit != "" {
		if _, err := os.Stat(explicit); err != nil {
			return "", fmt.Errorf("%w: %v", ErrNotInstalled, err)
		}
		return explicit, nil
	}
	arch, err := qemuArch()
	if err != nil {
		return "", err
	}
	name := "qemu-system-" + arch
	path, err := vmm.LookPath(name, pathList)
	if err != nil {
		return "", fmt.Errorf("%w: %s is not on PATH; install it (Debian/Ubuntu: apt-get install qemu-system-x86; Fedora: dnf install qemu-system-x86-core; Arch: pacman -S qemu-base) or set SANDBOX_QEMU to its path", ErrNotInstalled, name)
	}
	return path, nil
}

// Machine is the -M value: QEMU's microvm without ACPI. Our kernel has no
// ACPI (kernel/README.md); QEMU then describes the CPUs in an MP table and
// passes the virtio-mmio devices on the command line (virtio_mmio.device=),
// and the kernel needs no ACPI tables to parse.
const Machine = "microvm,acpi=off"

// Kernel parameters that cut boot time under emulation (measured in
// shared/reference/vm-boot-spike and kernel/README.md): no self-tests, no
// watchdogs, no PCI scan, one UART, panic → reset so a broken guest ends the
// VMM rather than hanging, and a reset by triple fault, at once (the
// default first tries a keyboard controller microvm does not have, for
// about a second). QEMU ends on the reset (-no-reboot).
const baseCmdline = "console=ttyS0 quiet panic=-1 reboot=t cryptomgr.notests init_on_alloc=0 tsc=reliable no_timer_check 8250.nr_uarts=1 mitigations=off pci=off audit=0 lsm=capability rodata=off nowatchdog"

// Cmdline is the kernel command line of a machine on accel, before the
// spec's own parameters.
func Cmdline(accel string) string {
	if accel == AccelTCG {
		// TCG has no paravirtual clock: the TSC rate would be calibrated
		// against the emulated PIT, slowly and badly.
		return baseCmdline + fmt.Sprintf(" tsc_early_khz=%d", HostTSCKHz())
	}
	return baseCmdline
}

func (e *Engine) args(spec vmm.Spec) []string {
	cmdline := Cmdline(e.accel)
	if spec.Cmdline != "" {
		cmdline += " " + spec.Cmdline
	}
	args := []string{
		"-nodefaults", "-no-user-config", "-display", "none", "-no-reboot",
		"-accel", e.accel,
		"-M", Machine,
		"-m", fmt.Sprint(spec.MemoryMiB),
		"-smp", fmt.Sprint(spec.CPUs),
		"-kernel", spec.Kernel,
		"-initrd", spec.Initrd,
		"-append", cmdline,
		"-chardev", "stdio,id=console,signal=off",
		"-serial", "chardev:console",
	}
	if e.accel == AccelKVM {
		args = append(args, "-cpu", "host")
	}
	readOnly := "off"
	if spec.RootDisk.ReadOnly {
		readOnly = "on"
	}
	if spec.RootDisk.NBD != nil {
		// The NBD socket follows the channels and the NIC in ExtraFiles.
		fd := 3 + len(spec.Channels)
		if spec.NIC != nil {
			fd++
		}
		args = append(args,
			"-blockdev", fmt.Sprintf("driver=nbd,server.type=fd,server.str=%d,export=root,node-name=root,read-only=%s", fd, readOnly),
			"-device", "virtio-blk-device,drive=root",
		)
	} else {
		args = append(args,
			"-drive", fmt.Sprintf("file=%s,format=%s,if=none,id=root,readonly=%s", escapeOpt(spec.RootDisk.Path), spec.RootDisk.Format, readOnly),
			"-device", "virtio-blk-device,drive=root",
		)
	}
	// extraFiles lists the VMM's inherited fds in the order Start passes
	// them: ExtraFiles[i] becomes fd 3+i in the child.
	if len(spec.Channels) > 0 {
		args = append(args, "-device", "virtio-serial-device")
		for i, ch := range spec.Channels {
			args = append(args,
				"-chardev", fmt.Sprintf("socket,id=ch%d,fd=%d", i, 3+i),
				"-device", fmt.Sprintf("virtserialport,chardev=ch%d,name=%s", i, ch.Name),
			)
		}
	}
	if spec.NIC != nil {
		args = append(args,
			"-netdev", fmt.Sprintf("stream,id=net0,server=off,addr.type=fd,addr.str=%d", 3+len(spec.Channels)),
			"-device", fmt.Sprintf("virtio-net-device,netdev=net0,mac=%s,host_mtu=%d", guestMAC, spec.NICMTU),
		)
	}
	return args
}

// guestMAC is the guest NIC's address: locally administered, QEMU's prefix.
const guestMAC = "52:54:00:12:34:56"

// escapeOpt escapes a value for QEMU's comma-separated option syntax.
func escapeOpt(s string) string { return strings.ReplaceAll(s, ",", ",,") }

// Start implements vmm.Engine.
func (e *Engine) Start(ctx context.Context, spec vmm.Spec) (vmm.Machine, error) {
	if err := validate(spec); err != nil {
		return nil, err
	}
	cmd := vmm.Command(spec.Env, e.binary, e.args(spec)...)
	cmd.Stdin = nil // /dev/null
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return nil, fmt.Errorf("qemu: console pipe: %w", err)
	}
	stderr, err := cmd.StderrPipe()
	if err != nil {
		stdout.Close()
		return nil, fmt.Errorf("qemu: stderr pipe: %w", err)
	}
	for _, ch := range spec.Channels {
		cmd.ExtraFiles = append(cmd.ExtraFiles, ch.Conn)
	}
	if spec.NIC != nil {
		cmd.ExtraFiles = append(cmd.ExtraFiles, spec.NIC)
	}
	if spec.RootDisk.NBD != nil {
		cmd.ExtraFiles = append(cmd.ExtraFiles, spec.RootDisk.NBD)
	}
	startErr := ctx.Err()
	if startErr == nil {
		startErr = vmm.StartChild(cmd)
	}
	// The child has its own copies now (or never will): ours must go, so the
	// host end of each channel sees EOF when QEMU exits.
	for _, f := range cmd.ExtraFiles {
		f.Close()
	}
	if startErr != nil {
		stdout.Close()
		stderr.Close()
		return nil, fmt.Errorf("qemu: start %s: %w", e.binary, startErr)
	}
	return vmm.WatchChild(cmd, stdout, stderr, spec.Console, "qemu", nil), nil
}

func validate(spec vmm.Spec) error {
	switch {
	case spec.CPUs < 1 || spec.CPUs > 255:
		return fmt.Errorf("qemu: %d vCPUs is out of range 1..255", spec.CPUs)
	case spec.MemoryMiB < 64:
		return fmt.Errorf("qemu: %d MiB of memory is too little to boot (at least 64)", spec.MemoryMiB)
	case spec.RootDisk.NBD == nil && spec.RootDisk.Format != "qcow2" && spec.RootDisk.Format != "raw":
		return fmt.Errorf("qemu: unsupported disk format %q", spec.RootDisk.Format)
	case spec.NIC != nil && (spec.NICMTU < 68 || spec.NICMTU > 65535):
		return fmt.Errorf("qemu: NIC MTU %d is out of range 68..65535", spec.NICMTU)
	}
	for _, ch := range spec.Channels {
		if ch.Name == "" || strings.ContainsAny(ch.Name, ",= \t\n") {
			return fmt.Errorf("qemu: invalid channel name %q", ch.Name)
		}
	}
	files := []string{spec.Kernel, spec.Initrd}
	if spec.RootDisk.NBD == nil {
		files = append(files, spec.RootDisk.Path)
	}
	for _, p := range files {
		if _, err := os.Stat(p); err != nil {
			return fmt.Errorf("qemu: %w", err)
		}
	}
	return nil
}
