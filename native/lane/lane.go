// Package lane is one booted sandbox: a VMM child running our kernel and
// init, and the control session with that init. It owns their lifecycle from
// boot to close, and turns every way a guest can fail (never ready, VMM
// killed, session lost) into an error that says what happened and shows the
// tail of the guest console.
package lane

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/url"
	"os"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/torkbot/sandbox/blockstore"
	"github.com/torkbot/sandbox/control"
	"github.com/torkbot/sandbox/guesttext"
	"github.com/torkbot/sandbox/netpolicy"
	"github.com/torkbot/sandbox/netpolicy/httpproxy"
	"github.com/torkbot/sandbox/vfs"
	"github.com/torkbot/sandbox/vmm"
)

// ErrClosed is returned by calls on a lane that is closing or closed.
var ErrClosed = errors.New("sandbox control is closed") // 0.6.0's text

// ExitedError reports that the VMM exited while the lane was in use (or
// while it booted), with how it exited and what the guest said last.
type ExitedError struct {
	Engine      string
	Status      string
	ConsoleTail string
}

// Error starts with 0.6.0's words for its host process dying ("sandbox-host
// exited"): the VMM process is what plays that part here.
func (e *ExitedError) Error() string {
	return fmt.Sprintf("sandbox-host exited: the sandbox VM exited unexpectedly (%s: %s); last guest console output:\n%s", e.Engine, e.Status, indent(e.ConsoleTail))
}

// BootError reports a guest whose init gave up while booting, with its reason
// (e.g. a mount target missing from the image).
type BootError struct {
	Reason      string
	ConsoleTail string
}

func (e *BootError) Error() string {
	return fmt.Sprintf("sandbox VM failed to boot: %s; last guest console output:\n%s", e.Reason, indent(e.ConsoleTail))
}

// initFatal is how sandbox-init prefixes the one line it prints before it
// powers off on a fatal error.
const initFatal = "sandbox-init: fatal: "

// bootFailure returns the reason init printed for a fatal boot error, if any.
func bootFailure(console string) (string, bool) {
	i := strings.LastIndex(console, initFatal)
	if i < 0 {
		return "", false
	}
	reason := console[i+len(initFatal):]
	if end := strings.IndexByte(reason, '\n'); end >= 0 {
		reason = reason[:end]
	}
	return strings.TrimSpace(reason), true
}

// BootTimeoutError reports a guest that did not become ready in time.
type BootTimeoutError struct {
	After       time.Duration
	ConsoleTail string
}

func (e *BootTimeoutError) Error() string {
	return fmt.Sprintf("sandbox VM did not become ready within %v; last guest console output:\n%s", e.After, indent(e.ConsoleTail))
}

func indent(s string) string {
	if s == "" {
		return "  (nothing)"
	}
	out := []byte("  ")
	for i := 0; i < len(s); i++ {
		out = append(out, s[i])
		if s[i] == '\n' && i+1 < len(s) {
			out = append(out, ' ', ' ')
		}
	}
	return string(out)
}

// Config describes one lane.
type Config struct {
	Engine   vmm.Engine
	Kernel   string
	Initrd   string
	RootDisk vmm.Disk
	// RootStore holds a copy-on-write root's blocks: set exactly when
	// RootDisk.ReadOnly is false. The guest then mounts its root
	// read-write, and Close persists it (see Lane.Close).
	RootStore blockstore.Store
	// EphemeralRoot gives a read-only RootDisk (no RootStore) a writable
	// copy-on-write view whose changes live in host memory and are dropped
	// at Close, as 0.6.0 gave a built-in root under a network policy.
	// ephemeralRootBytes bounds those changes; rootdisk.go says what the
	// guest sees past it.
	EphemeralRoot bool

	CPUs      int
	MemoryMiB int
	// ConsoleOutput, when set, is a file that also receives the guest console.
	ConsoleOutput string
	// BootTimeout bounds boot from VMM start to the guest's handshake.
	BootTimeout time.Duration
	// Network, when set, gives the guest a NIC whose every flow the policy
	// decides. Without it the guest has no NIC at all.
	Network netpolicy.Policy
	// UpstreamRootsPEM are certificates trusted, besides the system roots,
	// for the upstream side of intercepted HTTPS (NODE_EXTRA_CA_CERTS).
	UpstreamRootsPEM []byte
	// Mounts are host-implemented filesystems the guest mounts at boot.
	Mounts []Mount
	// Log receives what the host-side services report about guest requests
	// they could not serve (e.g. a filesystem call that failed with no errno).
	Log io.Writer
	// Env is the VMM process's environment and TempDir where the engine
	// keeps temporary files: those of the boot() call (vmm.Spec).
	Env     []string
	TempDir string
	// ModuleGroups are kernel module groups (kernel/modules.list) to load
	// besides those the lane's features need; for tests and benchmarks
	// that use more of the guest kernel.
	ModuleGroups []string
}

// Mount is one host-implemented filesystem, served to the guest over FUSE.
type Mount struct {
	// Target is where the guest mounts it: absolute, clean, not "/", and
	// existing in the root filesystem.
	Target string
	// FS serves it. Unless it is a vfs.PosixFileSystem the guest mounts it
	// read-only.
	FS vfs.FileSystem
}

// mountsCmdline tells sandbox-init which channel to mount where
// (sandbox-init/README.md): sandbox.mounts=fs.0:rw:/workspace,...
func mountsCmdline(mounts []Mount) string {
	entries := make([]string, len(mounts))
	for i, m := range mounts {
		mode := "ro"
		if _, ok := m.FS.(vfs.PosixFileSystem); ok {
			mode = "rw"
		}
		entries[i] = fmt.Sprintf("%s:%s:%s", mountChannel(i), mode, url.PathEscape(m.Target))
	}
	return "sandbox.mounts=" + strings.Join(entries, ",")
}

func mountChannel(i int) string { return fmt.Sprintf("fs.%d", i) }

// nicMTU is the guest NIC's MTU: virtio-net takes large frames, and fewer,
// larger frames cost less per byte through the netstack.
const nicMTU = 65520

// netCmdline tells sandbox-init how to configure eth0 (sandbox-init/README.md).
func netCmdline() string {
	return fmt.Sprintf("sandbox.ip=%s/24 sandbox.gateway=%s sandbox.ip6=%s/64 sandbox.gateway6=%s sandbox.dns=%s,%s sandbox.mtu=%d",
		netpolicy.GuestIPv4, netpolicy.GatewayIPv4, netpolicy.GuestIPv6, netpolicy.GatewayIPv6,
		netpolicy.GatewayIPv4, netpolicy.GatewayIPv6, nicMTU)
}

// consoleTailBytes is how much guest console an error shows.
const consoleTailBytes = 4 << 10

// shutdownGrace is how long close waits for a guest to power off cleanly
// before the VMM is killed.
const shutdownGrace = 5 * time.Second

// Lane is a booted sandbox.
type Lane struct {
	engine  string
	machine vmm.Machine
	client  *control.Client
	console *vmm.ConsoleTail
	conFile *os.File
	Guest   control.GuestInfo

	// services are the host-side servers of the guest's devices (the
	// netstack); stopServices ends them, and release waits for them.
	services     sync.WaitGroup
	stopServices context.CancelFunc
	stack        *netpolicy.Stack
	root         *rootDisk

	mu       sync.Mutex
	closing  bool
	closed   chan struct{}
	closeErr error
}

// Boot starts a VMM and waits until the guest's init answers the handshake.
// On any failure nothing is left running.
func Boot(ctx context.Context, cfg Config) (*Lane, error) {
	tail := vmm.NewConsoleTail(consoleTailBytes)
	var console io.Writer = tail
	var conFile *os.File
	if cfg.ConsoleOutput != "" {
		f, err := os.OpenFile(cfg.ConsoleOutput, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o644)
		if err != nil {
			return nil, fmt.Errorf("open console output file: %w", err)
		}
		conFile = f
		console = io.MultiWriter(tail, f)
	}
	fail := func(err error) (*Lane, error) {
		if conFile != nil {
			conFile.Close()
		}
		return nil, err
	}

	spec := vmm.Spec{
		Kernel:    cfg.Kernel,
		Initrd:    cfg.Initrd,
		CPUs:      cfg.CPUs,
		MemoryMiB: cfg.MemoryMiB,
		RootDisk:  cfg.RootDisk,
		Console:   console,
		Env:       cfg.Env,
		TempDir:   cfg.TempDir,
	}
	var (
		stack   *netpolicy.Stack
		nicHost *os.File
		err     error
	)
	var setup control.Setup
	if cfg.Network != nil {
		// A fresh CA per boot: its key never leaves this process and dies
		// with the lane; the guest trusts its certificate (control.Setup).
		ca, err := httpproxy.NewCA(httpproxy.CAOptions{})
		if err != nil {
			return fail(fmt.Errorf("set up HTTPS interception: %w", err))
		}
		proxy, err := httpproxy.New(httpproxy.Config{CA: ca, ExtraRootsPEM: cfg.UpstreamRootsPEM})
		if err != nil {
			return fail(fmt.Errorf("set up HTTPS interception: %w", err))
		}
		setup.TrustAnchors = []string{string(ca.CertPEM())}
		if stack, err = netpolicy.New(netpolicy.Config{Policy: cfg.Network, MTU: nicMTU, HTTP: proxy}); err != nil {
			return fail(fmt.Errorf("set up the network: %w", err))
		}
		if nicHost, spec.NIC, err = socketPair(); err != nil {
			return fail(fmt.Errorf("create NIC: %w", err))
		}
		spec.NICMTU = nicMTU
		spec.Cmdline = netCmdline()
	}
	// The root disk is served over NBD from the host (blockstore), so every
	// engine reaches it the same way and a COW store can sit in between.
	root, err := openRoot(ctx, cfg.RootDisk, cfg.RootStore, cfg.EphemeralRoot)
	if err != nil {
		closeAll(nicHost, spec.NIC)
		return fail(err)
	}
	if root.cow != nil {
		spec.Cmdline = strings.TrimSpace(spec.Cmdline + " sandbox.rootmode=rw")
	}
	rootHost, rootGuest, err := socketPair()
	if err != nil {
		root.Close()
		closeAll(nicHost, spec.NIC)
		return fail(fmt.Errorf("create root disk channel: %w", err))
	}
	spec.RootDisk = vmm.Disk{ReadOnly: root.cow == nil, NBD: rootGuest}
	// Host ends of the mounts' channels, in cfg.Mounts order.
	mountHosts := make([]*os.File, 0, len(cfg.Mounts))
	closeMounts := func() {
		closeAll(mountHosts...)
		for _, ch := range spec.Channels {
			ch.Conn.Close()
		}
	}
	for i := range cfg.Mounts {
		host, guest, err := socketPair()
		if err != nil {
			closeMounts()
			closeAll(nicHost, spec.NIC, rootHost, rootGuest)
			root.Close()
			return fail(fmt.Errorf("create mount channel: %w", err))
		}
		mountHosts = append(mountHosts, host)
		spec.Channels = append(spec.Channels, vmm.Channel{Name: mountChannel(i), Conn: guest})
	}
	if len(cfg.Mounts) > 0 {
		spec.Cmdline = strings.TrimSpace(spec.Cmdline + " " + mountsCmdline(cfg.Mounts))
	}
	if len(cfg.ModuleGroups) > 0 {
		spec.Cmdline = strings.TrimSpace(spec.Cmdline + " sandbox.modules=" + strings.Join(cfg.ModuleGroups, ","))
	}
	host, guest, err := socketPair()
	if err != nil {
		closeMounts()
		closeAll(nicHost, spec.NIC, rootHost, rootGuest)
		root.Close()
		return fail(fmt.Errorf("create control channel: %w", err))
	}
	spec.Channels = append(spec.Channels, vmm.Channel{Name: "control", Conn: guest})
	machine, err := cfg.Engine.Start(ctx, spec)
	if err != nil {
		closeAll(mountHosts...)
		closeAll(host, nicHost, rootHost)
		root.Close()
		return fail(err)
	}
	client, err := control.NewClient(host)
	if err != nil {
		machine.Kill()
		<-machine.Done()
		closeAll(mountHosts...)
		closeAll(host, nicHost, rootHost)
		root.Close()
		return fail(err)
	}
	servicesCtx, stopServices := context.WithCancel(context.Background())
	l := &Lane{
		engine:       cfg.Engine.Name(),
		machine:      machine,
		client:       client,
		console:      tail,
		conFile:      conFile,
		closed:       make(chan struct{}),
		stopServices: stopServices,
		stack:        stack,
		root:         root,
	}
	l.services.Go(func() {
		// Ends when the VMM exits (its end closes) or at release.
		if err := serveRoot(servicesCtx, rootHost, root, cfg.Log); err != nil && servicesCtx.Err() == nil && cfg.Log != nil {
			fmt.Fprintf(cfg.Log, "sandbox: root disk: %v\n", err)
		}
	})
	for i, m := range cfg.Mounts {
		conn := mountHosts[i]
		l.services.Go(func() {
			// Ends when the VMM exits (its end closes) or at release; Serve
			// closes conn.
			err := vfs.Serve(servicesCtx, conn, m.FS, vfs.Options{Log: cfg.Log})
			if err != nil && servicesCtx.Err() == nil && cfg.Log != nil {
				fmt.Fprintf(cfg.Log, "sandbox: mount %s: %v\n", m.Target, err)
			}
		})
	}
	if stack != nil {
		l.services.Go(func() {
			// Ends when the VMM exits (its end of the NIC closes) or at release.
			defer nicHost.Close()
			stack.Serve(servicesCtx, nicHost)
		})
	}

	bootCtx, cancel := context.WithTimeout(ctx, cfg.BootTimeout)
	defer cancel()
	type handshake struct {
		info control.GuestInfo
		err  error
	}
	hs := make(chan handshake, 1)
	go func() {
		info, err := l.client.Handshake(bootCtx, setup)
		hs <- handshake{info, err}
	}()
	select {
	case r := <-hs:
		if r.err == nil {
			l.Guest = r.info
			go l.watch()
			return l, nil
		}
		var refused *control.GuestError
		switch {
		case errors.As(r.err, &refused):
			// Init could not do the setup (e.g. install the CA).
			err = &BootError{Reason: guesttext.Printable(refused.Message), ConsoleTail: tail.String()}
		case errors.Is(bootCtx.Err(), context.DeadlineExceeded) && ctx.Err() == nil:
			err = &BootTimeoutError{After: cfg.BootTimeout, ConsoleTail: tail.String()}
		case machineExited(machine):
			err = l.exitedError()
		default:
			err = fmt.Errorf("sandbox VM boot failed: %w", r.err)
		}
	case <-machine.Done():
		err = l.exitedError()
	}
	if reason, ok := bootFailure(tail.String()); ok {
		err = &BootError{Reason: reason, ConsoleTail: tail.String()}
	}
	l.kill()
	return nil, err
}

// watch closes the control session when the VMM exits on its own, so calls
// in flight fail at once rather than when the channel notices.
func (l *Lane) watch() {
	<-l.machine.Done()
	l.client.Close()
}

func machineExited(m vmm.Machine) bool {
	select {
	case <-m.Done():
		return true
	case <-time.After(200 * time.Millisecond):
		return false
	}
}

func (l *Lane) exitedError() error {
	return &ExitedError{Engine: l.engine, Status: l.machine.ExitStatus(), ConsoleTail: l.console.String()}
}

// Pid is the VMM process id.
func (l *Lane) Pid() int { return l.machine.Pid() }

// Run runs cmd in the guest, passing output to sink, and returns its exit code.
func (l *Lane) Run(ctx context.Context, cmd control.Command, sink control.OutputSink) (int, error) {
	l.mu.Lock()
	closing := l.closing
	l.mu.Unlock()
	if closing {
		return 0, ErrClosed
	}
	code, err := l.client.Run(ctx, cmd, sink)
	if err == nil || ctx.Err() != nil {
		return code, err
	}
	return code, l.explain(err)
}

// explain turns a control error into the lane-level reason: the lane was
// closed, or the VMM died.
func (l *Lane) explain(err error) error {
	l.mu.Lock()
	closing := l.closing
	l.mu.Unlock()
	if closing && (errors.Is(err, control.ErrClosed) || errors.Is(err, control.ErrSessionLost)) {
		return ErrClosed
	}
	if machineExited(l.machine) {
		return l.exitedError()
	}
	return err
}

// Close asks the guest to sync and power off, waits for the VMM to exit
// (killing it after a grace period) and releases everything. On a COW root
// it then flushes what the device still holds to the store, and fails with
// a *StoreError if that fails; if the guest never answered the shutdown
// (the VMM was killed or crashed, before or during Close), it never synced,
// so nothing is flushed and Close fails saying the unflushed writes were
// dropped (wrapping an *ExitedError when the VMM died). It is idempotent;
// every call returns the first close's result.
func (l *Lane) Close(ctx context.Context) error {
	l.mu.Lock()
	if l.closing {
		l.mu.Unlock()
		<-l.closed
		return l.closeErr
	}
	l.closing = true
	l.mu.Unlock()

	var err error
	synced := false // the guest answered the shutdown: it synced its disks
	select {
	case <-l.machine.Done():
		// Already gone: nothing to shut down cleanly, nothing was lost that a
		// read-only root could lose (a COW root: see persist).
	default:
		sctx, cancel := l.shutdownContext(ctx)
		serr := l.client.Shutdown(sctx)
		// A guest error is init's stop failing after its sync (e.g. the
		// read-only remount): the sync still happened.
		synced = serr == nil || errors.As(serr, new(*control.GuestError))
		// A VMM that died meanwhile (killed, crashed) breaks the session in
		// more ways than ErrSessionLost; that is not a failed shutdown but
		// the VMM's exit, which persist reports.
		// A root with nothing to persist (read-only, or ephemeral: thrown
		// away) loses nothing to a guest that fails its shutdown (e.g. the
		// read-only remount, after the guest filled an ephemeral root's
		// bound and ext4 aborted its journal) or is too starved of CPU to
		// finish it within the grace: host mounts are written through
		// (no writeback cache), so the kill below is the whole close.
		nothingToPersist := l.root.cow == nil || l.root.ephemeral
		if serr != nil && !nothingToPersist && !errors.Is(serr, control.ErrSessionLost) && !machineExited(l.machine) {
			err = fmt.Errorf("guest shutdown: %w", serr)
		}
		select {
		case <-l.machine.Done():
		case <-sctx.Done():
			l.machine.Kill()
		}
		cancel()
	}
	perr := l.release()
	cause := err
	if cause == nil {
		cause = l.exitedError() // the session was lost: the VMM died
	}
	if perr == nil {
		perr = l.root.persist(ctx, synced, cause)
	}
	if perr != nil {
		if err != nil {
			perr = fmt.Errorf("%w (and the guest did not shut down cleanly: %v)", perr, err)
		}
		err = perr
	}
	l.closeErr = err
	close(l.closed)
	return err
}

// Kill stops the VMM at once and releases everything; for when the
// JavaScript side that owned the lane is gone.
func (l *Lane) Kill() {
	l.mu.Lock()
	if l.closing {
		l.mu.Unlock()
		return
	}
	l.closing = true
	l.mu.Unlock()
	l.kill()
	close(l.closed)
}

func (l *Lane) kill() {
	l.machine.Kill()
	l.release()
}

// release stops the host-side services once the VMM is gone. Every service
// follows its context except a COW root's block store call in flight,
// which is never abandoned: if one does not settle within
// storeAnswerTimeout, release returns its *StoreError and leaves the
// service to end, and the files to close, whenever the call settles.
func (l *Lane) release() error {
	l.stopServices()
	if l.stack != nil {
		l.stack.Close()
	}
	l.client.Close()
	<-l.machine.Done()
	done := make(chan struct{})
	closeFiles := func() {
		l.services.Wait()
		l.root.Close()
		if l.conFile != nil {
			l.conFile.Close()
		}
		close(done)
	}
	go closeFiles()
	return l.root.await(done, func() {})
}

// shutdownContext is ctx, ended once the guest has had shutdownGrace to
// shut down, not counting the time the host spent in the block store's
// calls (a slow store's write-back is part of the guest's sync), or once
// one store call has been in flight for storeAnswerTimeout.
func (l *Lane) shutdownContext(ctx context.Context) (context.Context, context.CancelFunc) {
	sctx, cancel := context.WithCancel(ctx)
	start := time.Now()
	_, _, spentBefore := l.root.store.state()
	go func() {
		tick := time.NewTicker(50 * time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-sctx.Done():
				return
			case <-tick.C:
			}
			_, busy, spent := l.root.store.state()
			if time.Since(start)-(spent-spentBefore) > shutdownGrace || busy > storeAnswerTimeout {
				cancel()
				return
			}
		}
	}()
	return sctx, cancel
}

func closeAll(files ...*os.File) {
	for _, f := range files {
		if f != nil {
			f.Close()
		}
	}
}

// socketPair returns the two ends of a connected stream socket pair, both
// close-on-exec (the engine passes its end to the VMM explicitly).
func socketPair() (host, guest *os.File, err error) {
	fds, err := syscall.Socketpair(syscall.AF_UNIX, syscall.SOCK_STREAM|syscall.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, nil, err
	}
	return os.NewFile(uintptr(fds[0]), "control-host"), os.NewFile(uintptr(fds[1]), "control-guest"), nil
}
