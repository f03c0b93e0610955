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
	"sync"
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

// Boot probe: some KVMs create VMs but cannot run a normal guest kernel
// (the nested KVM of the machines this project is developed on hangs right
// after real-mode setup). Opening /dev/kvm cannot tell, so New boots the
// real kernel once, as the QEMU engine's probe does, and waits for the
// kernel's line announcing init.
const (
	bootProbeTimeout = 4 * time.Second
	bootProbeMarker  = "Run /init as init process"
	// Not quiet: the marker is a loglevel-7 message.
	bootProbeCmdline = "console=ttyS0 loglevel=7 panic=-1 reboot=k 8250.nr_uarts=1 pci=off"
)

// bootProbe runs the helper on opts.Kernel and opts.Initrd with no devices
// but the console, and kills it once the marker shows.
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
	var out lockedBuffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := vmm.StartChild(cmd); err != nil {
		return fmt.Errorf("%w: start %s: %v", ErrUnavailable, e.helper, err)
	}
	exited := make(chan struct{})
	go func() { cmd.Wait(); close(exited) }()
	timer := time.NewTimer(bootProbeTimeout)
	defer timer.Stop()
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	booted := false
loop:
	for {
		select {
		case <-tick.C:
			if booted = out.Contains(bootProbeMarker); booted {
				break loop
			}
		case <-exited:
			booted = out.Contains(bootProbeMarker)
			break loop
		case <-timer.C:
			break loop
		case <-ctx.Done():
			cmd.Process.Kill()
			<-exited
			return ctx.Err()
		}
	}
	cmd.Process.Kill()
	<-exited
	if !booted {
		tail := strings.TrimSpace(out.Tail(300))
		if tail == "" {
			tail = "(no output)"
		}
		return fmt.Errorf("%w: libkrun loads and the hypervisor creates VMs, but a test boot of the guest kernel did not reach init within %v (a nested or broken KVM?); use SANDBOX_ENGINE=qemu. Last output: %s", ErrUnavailable, bootProbeTimeout, tail)
	}
	return nil
}

// lockedBuffer collects a child's output for the boot probe.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	// Bounded: only the marker and a tail matter.
	if l.b.Len() > 1<<20 {
		return len(p), nil
	}
	return l.b.Write(p)
}

func (l *lockedBuffer) Contains(s string) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return bytes.Contains(l.b.Bytes(), []byte(s))
}

func (l *lockedBuffer) Tail(n int) string {
	l.mu.Lock()
	defer l.mu.Unlock()
	b := l.b.Bytes()
	if len(b) > n {
		b = b[len(b)-n:]
	}
	return string(b)
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

// Start implements vmm.Engine.
func (e *Engine) Start(ctx context.Context, spec vmm.Spec) (vmm.Machine, error) {
	if err := validate(spec); err != nil {
		closeSpec(spec)
		return nil, err
	}
	cfg, files, err := e.helperConfig(spec)
	if err != nil {
		closeSpec(spec)
		return nil, err
	}
	// Files this function opens besides the spec's; closed on every path
	// once the child has its copies (or never will).
	closeFiles := func() {
		for _, f := range files {
			f.Close()
		}
	}
	// The channels' unix sockets live in a private directory, removed when
	// the helper has exited (libkrun ends the helper with exit(), so the
	// helper cannot clean up itself). Short: macOS caps socket paths at
	// 104 bytes.
	dir, err := socketDir(spec.TempDir)
	if err != nil {
		closeFiles()
		return nil, err
	}
	cfg.SocketDir = dir
	fail := func(err error) (vmm.Machine, error) {
		closeFiles()
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
	cfg.StatusFD = 3 + len(files)
	files = append(files, statusW)
	// The parent pipe: only this process holds the write end, so the helper
	// sees EOF when this process dies, on macOS too.
	parentR, parentW, err := os.Pipe()
	if err != nil {
		return fail(fmt.Errorf("krun: parent pipe: %w", err))
	}
	cfg.ParentFD = 3 + len(files)
	files = append(files, parentR)
	config, err := json.Marshal(cfg)
	if err != nil {
		panic(err) // plain data
	}

	cmd := vmm.Command(spec.Env, e.helper, "run")
	cmd.Stdin = bytes.NewReader(config)
	cmd.ExtraFiles = files
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
	// The child has its own copies now: ours must go, so the host end of
	// each channel sees EOF when the helper exits.
	closeFiles()
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
// inherits, in ExtraFiles order: the spec's own files, which stay the
// caller's to close if it fails.
func (e *Engine) helperConfig(spec vmm.Spec) (HelperConfig, []*os.File, error) {
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
	var files []*os.File
	add := func(f *os.File) int {
		files = append(files, f)
		return 2 + len(files)
	}
	ports := map[string]uint32{}
	port := uint32(firstChannelPort)
	for _, ch := range spec.Channels {
		cfg.Channels = append(cfg.Channels, HelperChannel{Name: ch.Name, Port: port, FD: add(ch.Conn)})
		ports[ch.Name] = port
		port++
	}
	boot := spec.Boot
	if spec.NIC != nil {
		cfg.NICFD = add(spec.NIC)
		cfg.MAC = guestMAC
		if boot.Net != nil {
			net := *boot.Net
			net.MTU = min(net.MTU, krunMTU)
			boot.Net = &net
		}
	}
	if spec.RootDisk.NBD != nil {
		cfg.Disk = &HelperDisk{Port: port, FD: add(spec.RootDisk.NBD), ReadOnly: spec.RootDisk.ReadOnly}
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
	return cfg, files, nil
}

func validate(spec vmm.Spec) error {
	switch {
	case spec.CPUs < 1 || spec.CPUs > 255:
		// krun_set_vm_config takes the count as a uint8.
		return fmt.Errorf("krun: %d vCPUs is out of range 1..255", spec.CPUs)
	case spec.MemoryMiB < 64:
		return fmt.Errorf("krun: %d MiB of memory is too little to boot (at least 64)", spec.MemoryMiB)
	case spec.RootDisk.NBD == nil && spec.RootDisk.Format != "qcow2" && spec.RootDisk.Format != "raw":
		return fmt.Errorf("krun: unsupported disk format %q", spec.RootDisk.Format)
	case spec.NIC != nil && (spec.NICMTU < 68 || spec.NICMTU > 65535):
		return fmt.Errorf("krun: NIC MTU %d is out of range 68..65535", spec.NICMTU)
	}
	seen := map[string]bool{}
	for _, ch := range spec.Channels {
		if ch.Name == "" || len(ch.Name) > 64 || strings.Trim(ch.Name, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-") != "" {
			return fmt.Errorf("krun: invalid channel name %q (1-64 of A-Za-z0-9._-)", ch.Name)
		}
		if seen[ch.Name] || (ch.Name == DiskChannel && spec.RootDisk.NBD != nil) {
			return fmt.Errorf("krun: channel %q given twice", ch.Name)
		}
		seen[ch.Name] = true
	}
	files := []string{spec.Kernel, spec.Initrd}
	if spec.RootDisk.NBD == nil {
		files = append(files, spec.RootDisk.Path)
	}
	for _, p := range files {
		if _, err := os.Stat(p); err != nil {
			return fmt.Errorf("krun: %w", err)
		}
	}
	return nil
}

// closeSpec closes the fds a failed Start took ownership of.
func closeSpec(spec vmm.Spec) {
	for _, ch := range spec.Channels {
		ch.Conn.Close()
	}
	if spec.NIC != nil {
		spec.NIC.Close()
	}
	if spec.RootDisk.NBD != nil {
		spec.RootDisk.NBD.Close()
	}
}

// machine is the helper process. Its parent pipe's write end (which tells a
// macOS helper its parent is alive) and its socket directory go when it
// exits.
type machine struct {
	*vmm.ChildMachine
}
