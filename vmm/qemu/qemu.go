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

// args is QEMU's command line for spec, whose boot parameters are already
// encoded as boot, and the files QEMU inherits, in exec.Cmd.ExtraFiles
// order: each fd number in the arguments comes from adding its file, so the
// two cannot disagree.
func (e *Engine) args(spec vmm.Spec, boot string) ([]string, *vmm.ExtraFiles) {
	var files vmm.ExtraFiles
	cmdline := Cmdline(e.accel) + " " + boot
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
		args = append(args,
			"-blockdev", fmt.Sprintf("driver=nbd,server.type=fd,server.str=%d,export=root,node-name=root,read-only=%s", files.Add(spec.RootDisk.NBD), readOnly),
			"-device", "virtio-blk-device,drive=root",
		)
	} else {
		args = append(args,
			"-drive", fmt.Sprintf("file=%s,format=%s,if=none,id=root,readonly=%s", escapeOpt(spec.RootDisk.Path), spec.RootDisk.Format, readOnly),
			"-device", "virtio-blk-device,drive=root",
		)
	}
	if len(spec.Channels) > 0 {
		args = append(args, "-device", "virtio-serial-device")
		for i, ch := range spec.Channels {
			args = append(args,
				"-chardev", fmt.Sprintf("socket,id=ch%d,fd=%d", i, files.Add(ch.Conn)),
				"-device", fmt.Sprintf("virtserialport,chardev=ch%d,name=%s", i, ch.Name),
			)
		}
	}
	if spec.NIC != nil {
		args = append(args,
			"-netdev", fmt.Sprintf("stream,id=net0,server=off,addr.type=fd,addr.str=%d", files.Add(spec.NIC)),
			"-device", fmt.Sprintf("virtio-net-device,netdev=net0,mac=%s,host_mtu=%d", vmm.GuestMAC, spec.NICMTU),
		)
	}
	return args, &files
}

// escapeOpt escapes a value for QEMU's comma-separated option syntax.
func escapeOpt(s string) string { return strings.ReplaceAll(s, ",", ",,") }

// Start implements vmm.Engine. It owns spec's fds from the first line: on
// every failure they are closed, as on success once QEMU has its copies.
func (e *Engine) Start(ctx context.Context, spec vmm.Spec) (vmm.Machine, error) {
	if err := spec.Validate(); err != nil {
		spec.Close()
		return nil, fmt.Errorf("qemu: %w", err)
	}
	boot, err := spec.Boot.Encode()
	if err != nil {
		spec.Close()
		return nil, fmt.Errorf("qemu: %w", err)
	}
	args, files := e.args(spec, boot)
	// The child has its own copies once started (or never will): ours must
	// go, so the host end of each channel sees EOF when QEMU exits.
	defer files.Close()
	cmd := vmm.Command(spec.Env, e.binary, args...)
	cmd.Stdin = nil // /dev/null
	cmd.ExtraFiles = files.Files()
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return nil, fmt.Errorf("qemu: console pipe: %w", err)
	}
	stderr, err := cmd.StderrPipe()
	if err != nil {
		stdout.Close()
		return nil, fmt.Errorf("qemu: stderr pipe: %w", err)
	}
	err = ctx.Err()
	if err == nil {
		err = vmm.StartChild(cmd)
	}
	if err != nil {
		stdout.Close()
		stderr.Close()
		return nil, fmt.Errorf("qemu: start %s: %w", e.binary, err)
	}
	return vmm.WatchChild(cmd, stdout, stderr, spec.Console, "qemu", nil), nil
}
