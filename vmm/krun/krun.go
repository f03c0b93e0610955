// Package krun is the libkrun engine: a KVM (Linux) or Hypervisor.framework
// (macOS) microVM run by libkrun, booted from our own kernel and initrd.
//
// krun_start_enter takes over the process that calls it and never returns,
// so the VM runs in a helper executable, sandbox-krun (cmd/sandbox-krun),
// that this engine starts as a child with the spec as JSON on its standard
// input and the spec's sockets as inherited fds. The helper dlopen()s
// libkrun at run time: a package without libkrun installed still works, and
// selection (vmm/engines) picks QEMU instead.
//
// Devices: channels are vsock ports that libkrun maps to unix sockets the
// helper listens on and bridges to the channel fds; the NIC is
// krun_add_net_unixstream on the NIC fd; the console is a legacy serial
// port writing to the helper's standard output. libkrun has no NBD client,
// so the guest attaches the root disk itself as /dev/nbd0 over the "disk"
// channel, which the helper relays to the host's NBD server
// (vmm/krun/nbdrelay). docs/engine-krun.md has the whole design and what
// could not be verified without KVM.
package krun

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"time"

	"github.com/torkbot/sandbox/vmm"
)

// Errors callers may test for with errors.Is.
var (
	// ErrHelperNotFound: the sandbox-krun executable is not installed.
	ErrHelperNotFound = errors.New("krun: helper executable sandbox-krun not found")
	// ErrUnavailable: the helper runs but libkrun or the hypervisor cannot;
	// the error's text names what is missing and the fix.
	ErrUnavailable = errors.New("krun: libkrun cannot run VMs here")
)

// HelperName is the helper's file name.
const HelperName = "sandbox-krun"

// DefaultLibrary is the libkrun the helper loads unless told otherwise.
func DefaultLibrary() string {
	if runtime.GOOS == "darwin" {
		return "libkrun.dylib"
	}
	return "libkrun.so.1"
}

// Options configure an Engine.
type Options struct {
	// Helper is the sandbox-krun executable; empty means look for it
	// (FindHelper).
	Helper string
	// Library is the libkrun library the helper loads; empty means
	// DefaultLibrary.
	Library string
	// Kernel is the guest kernel; FindHelper looks beside its platform
	// package. With Initrd, New boots it once to check that the hypervisor
	// really runs guests; empty skips that check.
	Kernel string
	Initrd string
	// ProbeCacheDir keeps the test boot's verdict across processes
	// (vmm.ProbeCache); "" keeps it for this process only.
	ProbeCacheDir string
	// Path is the $PATH FindHelper looks in last.
	Path string
	// Env is the environment of the helper's probe runs (vmm.Command).
	Env []string
	// TempDir holds the test boot's socket directory.
	TempDir string
}

// Engine starts libkrun machines.
type Engine struct {
	helper  string
	library string
}

var _ vmm.Engine = (*Engine)(nil)

// New finds the helper and checks, by running it, that libkrun loads with
// every symbol the helper calls and that the hypervisor is usable. Its
// errors wrap ErrHelperNotFound or ErrUnavailable and say what to do.
func New(ctx context.Context, opts Options) (*Engine, error) {
	helper, err := FindHelper(opts.Helper, opts.Kernel, opts.Path)
	if err != nil {
		return nil, err
	}
	e := &Engine{helper: helper, library: opts.Library}
	if err := e.probe(ctx, opts.Env); err != nil {
		return nil, err
	}
	if opts.Kernel != "" && opts.Initrd != "" {
		if err := e.cachedBootProbe(ctx, opts); err != nil {
			return nil, err
		}
	}
	return e, nil
}

// cachedBootProbe is bootProbe, whose verdict costs a guest boot (seconds
// on a broken KVM), kept like QEMU's KVM probe. The quick probe above still
// runs every time, so a library that went away is noticed at once.
func (e *Engine) cachedBootProbe(ctx context.Context, opts Options) error {
	cache := vmm.ProbeCache{Dir: opts.ProbeCacheDir, Kind: "krun-boot"}
	key := cache.Key(e.helper, e.library, opts.Kernel, opts.Initrd, "/dev/kvm")
	if v, ok := cache.Load(key); ok {
		if v == "ok" {
			return nil
		}
		if reason, failed := strings.CutPrefix(v, "error: "); failed {
			where := "this process"
			if opts.ProbeCacheDir != "" {
				where = "the krun-boot-* files of " + opts.ProbeCacheDir + ": delete them to probe again"
			}
			return fmt.Errorf("%w: %s (the verdict of an earlier test boot, kept in %s)", ErrUnavailable, reason, where)
		}
	}
	err := e.bootProbe(ctx, opts)
	switch {
	case err == nil:
		cache.Store(key, "ok")
	case errors.Is(err, ErrUnavailable) && ctx.Err() == nil:
		reason := strings.TrimPrefix(err.Error(), ErrUnavailable.Error()+": ")
		cache.Store(key, "error: "+strings.ReplaceAll(reason, "\n", "; "))
	}
	return err
}

// FindHelper returns the helper to run: explicit when set, else the one the
// platform package ships (two levels above the kernel:
// <package>/artifacts/kernel/vmlinux → <package>/sandbox-krun), else
// sandbox-krun on path (a $PATH value).
func FindHelper(explicit, kernel, path string) (string, error) {
	if explicit != "" {
		if _, err := os.Stat(explicit); err != nil {
			return "", fmt.Errorf("%w: %v (SANDBOX_KRUN_HELPER)", ErrHelperNotFound, err)
		}
		return explicit, nil
	}
	if kernel != "" {
		p := filepath.Join(filepath.Dir(kernel), "..", "..", HelperName)
		if _, err := os.Stat(p); err == nil {
			return filepath.Clean(p), nil
		}
	}
	if p, err := vmm.LookPath(HelperName, path); err == nil {
		return p, nil
	}
	return "", fmt.Errorf("%w: it ships in the platform package beside sandbox.node (reinstall the package, or build it with scripts/build.sh), or set SANDBOX_KRUN_HELPER to its path", ErrHelperNotFound)
}

// probeTimeout bounds the helper's probe: loading a library and opening
// /dev/kvm take milliseconds.
const probeTimeout = 10 * time.Second

// probe runs `sandbox-krun probe`, which loads libkrun, resolves its symbols
// and checks the hypervisor, and prints "ok" or one line naming the problem.
func (e *Engine) probe(ctx context.Context, env []string) error {
	ctx, cancel := context.WithTimeout(ctx, probeTimeout)
	defer cancel()
	args := []string{"probe"}
	if e.library != "" {
		args = append(args, "-library", e.library)
	}
	cmd := vmm.CommandContext(ctx, env, e.helper, args...)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	err := cmd.Run()
	msg := strings.TrimSpace(out.String())
	if err == nil && msg == "ok" {
		return nil
	}
	if msg == "" {
		msg = fmt.Sprintf("%s probe: %v", e.helper, err)
	}
	return fmt.Errorf("%w: %s", ErrUnavailable, msg)
}

// bootProbeCmdline boots the probe's guest: not quiet, since
// vmm.InitMarker is a loglevel-7 message.
const bootProbeCmdline = "console=ttyS0 loglevel=7 panic=-1 reboot=k 8250.nr_uarts=1 pci=off"

// bootProbe runs the helper on opts.Kernel and opts.Initrd with no devices
// but the console (vmm.ProbeBoot): some KVMs create VMs but cannot run a
// normal guest kernel, which only a boot shows.
func (e *Engine) bootProbe(ctx context.Context, opts Options) error {
	dir, err := socketDir(opts.TempDir)
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	cfg, err := json.Marshal(HelperConfig{
		Version: HelperConfigVersion, Library: e.library,
		Kernel: opts.Kernel, Initrd: opts.Initrd, Cmdline: bootProbeCmdline,
		CPUs: 1, MemoryMiB: 128, NICFD: -1, StatusFD: -1, ParentFD: -1, SocketDir: dir,
	})
	if err != nil {
		panic(err) // plain data
	}
	cmd := vmm.Command(opts.Env, e.helper, "run")
	cmd.Stdin = bytes.NewReader(cfg)
	booted, tail, err := vmm.ProbeBoot(ctx, cmd)
	switch {
	case ctx.Err() != nil:
		return ctx.Err()
	case err != nil:
		return fmt.Errorf("%w: start %s: %v", ErrUnavailable, e.helper, err)
	case !booted:
		if tail = strings.TrimSpace(tail); tail == "" {
			tail = "(no output)"
		}
		return fmt.Errorf("%w: libkrun loads and the hypervisor creates VMs, but a test boot of the guest kernel did not reach init within %v (a nested or broken KVM?); use SANDBOX_ENGINE=qemu. Last output: %s", ErrUnavailable, vmm.BootProbeTimeout, tail)
	}
	return nil
}

// Name implements vmm.Engine.
func (e *Engine) Name() string { return "krun" }

// Helper is the helper executable this engine runs.
func (e *Engine) Helper() string { return e.helper }

// NewUnprobed returns an engine that runs helper without probing it first;
// for tests that drive the helper with a stand-in libkrun.
func NewUnprobed(helper, library string) *Engine {
	return &Engine{helper: helper, library: library}
}

// startTimeout bounds how long Start waits for the helper to configure
// libkrun (it reads the kernel and initrd, nothing slower).
const startTimeout = 30 * time.Second

// Start implements vmm.Engine. It owns spec's fds from the first line: on
// every failure they are closed, as on success once the helper has its
// copies.
func (e *Engine) Start(ctx context.Context, spec vmm.Spec) (vmm.Machine, error) {
	if err := validate(spec); err != nil {
		spec.Close()
		return nil, fmt.Errorf("krun: %w", err)
	}
	cfg, files, err := e.helperConfig(spec)
	if err != nil {
		spec.Close()
		return nil, err
	}
	// The child has its own copies once started (or never will): ours must
	// go, so the host end of each channel sees EOF when the helper exits.
	defer files.Close()
	// The channels' unix sockets live in a private directory, removed when
	// the helper has exited (libkrun ends the helper with exit(), so the
	// helper cannot clean up itself). Short: macOS caps socket paths at
	// 104 bytes.
	dir, err := socketDir(spec.TempDir)
	if err != nil {
		return nil, err
	}
	cfg.SocketDir = dir
	fail := func(err error) (vmm.Machine, error) {
		os.RemoveAll(dir)
		return nil, err
	}
	// The status pipe: the helper says "ok" just before it enters the VM, or
	// why it could not.
	statusR, statusW, err := os.Pipe()
	if err != nil {
		return fail(fmt.Errorf("krun: status pipe: %w", err))
	}
	defer statusR.Close()
	cfg.StatusFD = files.Add(statusW)
	// The parent pipe: only this process holds the write end, so the helper
	// sees EOF when this process dies, on macOS too.
	parentR, parentW, err := os.Pipe()
	if err != nil {
		return fail(fmt.Errorf("krun: parent pipe: %w", err))
	}
	cfg.ParentFD = files.Add(parentR)
	config, err := json.Marshal(cfg)
	if err != nil {
		panic(err) // plain data
	}

	cmd := vmm.Command(spec.Env, e.helper, "run")
	cmd.Stdin = bytes.NewReader(config)
	cmd.ExtraFiles = files.Files()
	// Pipes rather than StdoutPipe: the console reader must see EOF only
	// when the helper (and libkrun's serial port in it) is gone.
	stdoutR, stdoutW, err := os.Pipe()
	if err != nil {
		parentW.Close()
		return fail(fmt.Errorf("krun: console pipe: %w", err))
	}
	stderrR, stderrW, err := os.Pipe()
	if err != nil {
		parentW.Close()
		stdoutR.Close()
		stdoutW.Close()
		return fail(fmt.Errorf("krun: stderr pipe: %w", err))
	}
	cmd.Stdout, cmd.Stderr = stdoutW, stderrW
	err = ctx.Err()
	if err == nil {
		err = vmm.StartChild(cmd)
	}
	stdoutW.Close()
	stderrW.Close()
	if err != nil {
		parentW.Close()
		stdoutR.Close()
		stderrR.Close()
		return fail(fmt.Errorf("krun: start %s: %w", e.helper, err))
	}
	// Now, not at return: the status pipe must see EOF if the helper dies.
	files.Close()
	m := machine{vmm.WatchChild(cmd, stdoutR, stderrR, spec.Console, "krun", func() {
		parentW.Close()
		os.RemoveAll(dir)
	})}
	if err := m.awaitStatus(ctx, statusR); err != nil {
		m.Kill()
		<-m.Done()
		return nil, err
	}
	return m, nil
}

// socketDir makes a private directory for the helper's sockets in tempDir
// ($TMPDIR of the boot() call; never this process's own, which may be stale).
func socketDir(tempDir string) (string, error) {
	if tempDir == "" {
		return "", errors.New("krun: no temporary directory given for the helper's sockets")
	}
	dir, err := os.MkdirTemp(tempDir, "krun")
	if err != nil {
		return "", fmt.Errorf("krun: socket directory in %s (TMPDIR): %w", tempDir, err)
	}
	return dir, nil
}

// awaitStatus reads the helper's status line.
func (m machine) awaitStatus(ctx context.Context, status *os.File) error {
	line := make(chan string, 1)
	go func() {
		// One line at most; EOF without one means the helper died first.
		b, _ := bufio.NewReader(status).ReadString('\n')
		line <- strings.TrimSpace(b)
	}()
	timer := time.NewTimer(startTimeout)
	defer timer.Stop()
	select {
	case l := <-line:
		switch {
		case l == "ok":
			return nil
		case strings.HasPrefix(l, "error: "):
			return fmt.Errorf("krun: %s", strings.TrimPrefix(l, "error: "))
		default:
			return fmt.Errorf("krun: helper exited before starting the VM (%s)", m.ExitStatus())
		}
	case <-ctx.Done():
		return fmt.Errorf("krun: start: %w", ctx.Err())
	case <-timer.C:
		return fmt.Errorf("krun: helper did not start the VM within %v", startTimeout)
	}
}

// helperConfig maps spec onto the helper's config and the files it
// inherits; each fd number in the config comes from adding its file. On
// failure the files stay the caller's (spec's) to close.
func (e *Engine) helperConfig(spec vmm.Spec) (HelperConfig, *vmm.ExtraFiles, error) {
	cfg := HelperConfig{
		Version:   HelperConfigVersion,
		Library:   e.library,
		Kernel:    spec.Kernel,
		Initrd:    spec.Initrd,
		CPUs:      spec.CPUs,
		MemoryMiB: spec.MemoryMiB,
		NICFD:     -1,
		StatusFD:  -1,
		ParentFD:  -1,
	}
	var files vmm.ExtraFiles
	ports := map[string]uint32{}
	port := uint32(firstChannelPort)
	for _, ch := range spec.Channels {
		cfg.Channels = append(cfg.Channels, HelperChannel{Name: ch.Name, Port: port, FD: files.Add(ch.Conn)})
		ports[ch.Name] = port
		port++
	}
	boot := spec.Boot
	if spec.NIC != nil {
		cfg.NICFD = files.Add(spec.NIC)
		cfg.MAC = vmm.GuestMAC
		if boot.Net != nil {
			net := *boot.Net
			net.MTU = min(net.MTU, krunMTU)
			boot.Net = &net
		}
	}
	if spec.RootDisk.NBD != nil {
		cfg.Disk = &HelperDisk{Port: port, FD: files.Add(spec.RootDisk.NBD), ReadOnly: spec.RootDisk.ReadOnly}
		ports[DiskChannel] = port
		boot.RootNBD = DiskChannel
	} else {
		cfg.DiskPath, cfg.DiskFormat, cfg.DiskReadOnly = spec.RootDisk.Path, spec.RootDisk.Format, spec.RootDisk.ReadOnly
	}
	if len(ports) > 0 {
		boot.VsockPorts = ports
	}
	params, err := boot.Encode()
	if err != nil {
		return HelperConfig{}, nil, fmt.Errorf("krun: %w", err)
	}
	cfg.Cmdline = baseCmdline + " " + params
	return cfg, &files, nil
}

// validate is vmm.Spec.Validate plus this engine's one reservation: the
// root disk's NBD session runs on a channel named DiskChannel.
func validate(spec vmm.Spec) error {
	if err := spec.Validate(); err != nil {
		return err
	}
	for _, ch := range spec.Channels {
		if ch.Name == DiskChannel && spec.RootDisk.NBD != nil {
			return fmt.Errorf("channel %q given twice (the root disk's NBD session uses it)", DiskChannel)
		}
	}
	return nil
}

// machine is the helper process. Its parent pipe's write end (which tells a
// macOS helper its parent is alive) and its socket directory go when it
// exits.
type machine struct {
	*vmm.ChildMachine
}
