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
	"net/netip"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/torkbot/sandbox/blockstore"
	"github.com/torkbot/sandbox/bootparams"
	"github.com/torkbot/sandbox/control"
	"github.com/torkbot/sandbox/guesttext"
	"github.com/torkbot/sandbox/internal/sockpair"
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

func mountChannel(i int) string { return fmt.Sprintf("fs.%d", i) }

// nicMTU is the guest NIC's MTU: virtio-net takes large frames, and fewer,
// larger frames cost less per byte through the netstack.
const nicMTU = 65520

// guestNet is eth0's configuration for init: the addresses the netstack
// (netpolicy) serves the guest on, the gateway as its resolver.
func guestNet() *bootparams.Net {
	return &bootparams.Net{
		IP4:      netip.PrefixFrom(netpolicy.GuestIPv4, 24),
		Gateway4: netpolicy.GatewayIPv4,
		IP6:      netip.PrefixFrom(netpolicy.GuestIPv6, 64),
		Gateway6: netpolicy.GatewayIPv6,
		DNS:      []netip.Addr{netpolicy.GatewayIPv4, netpolicy.GatewayIPv6},
		MTU:      nicMTU,
	}
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
func Boot(ctx context.Context, cfg Config) (_ *Lane, err error) {
	b := &booting{cfg: cfg}
	defer func() {
		if err != nil {
			b.unwind()
		}
	}()
	for _, step := range []func(context.Context) error{
		b.openConsole,
		b.attachNetwork,
		b.attachRoot,
		b.attachMounts,
		b.startMachine,
		b.connect,
	} {
		if err := step(ctx); err != nil {
			return nil, err
		}
	}
	l := b.serve()
	return l, b.handshake(ctx, l)
}

// booting is a Boot in progress: each step adds to spec what the guest gets
// and pushes onto undo how to release what it took, which unwind runs in
// reverse when a later step fails. Once the lane exists, its kill is the
// one undo left: the lane owns everything.
type booting struct {
	cfg   Config
	spec  vmm.Spec
	setup control.Setup
	undo  []func()

	tail    *vmm.ConsoleTail
	conFile *os.File
	stack   *netpolicy.Stack
	nicHost *os.File
	root    *rootDisk
	// rootHost, mountHosts (in cfg.Mounts order) and controlHost are the
	// host ends of the guest's channels; their guest ends are in spec.
	rootHost    *os.File
	mountHosts  []*os.File
	controlHost *os.File
	// startAttempted: the engine took the guest ends in spec.
	startAttempted bool
	machine        vmm.Machine
	client         *control.Client
}

func (b *booting) onUnwind(f func()) { b.undo = append(b.undo, f) }

func (b *booting) unwind() {
	for i := len(b.undo) - 1; i >= 0; i-- {
		b.undo[i]()
	}
	b.undo = nil
}

// pair returns a new channel's two ends, the guest's for spec: until the
// engine takes it at start, it is ours to close on failure.
func (b *booting) pair(name string) (host, guest *os.File, err error) {
	// Non-blocking (sockpair.New), so Go's poller serves the host end: a
	// Close then ends a Read in progress, where on a blocking fd it would
	// wait for the guest to send something, forever if the guest is hung.
	host, guest, err = sockpair.New(name+"-host", name+"-guest")
	if err != nil {
		return nil, nil, fmt.Errorf("create the %s channel: %w", name, err)
	}
	b.onUnwind(func() {
		host.Close()
		if !b.startAttempted {
			guest.Close()
		}
	})
	return host, guest, nil
}

// openConsole sets where the guest console goes: a tail kept for errors,
// and the ConsoleOutput file if one is set.
func (b *booting) openConsole(context.Context) error {
	b.tail = vmm.NewConsoleTail(consoleTailBytes)
	b.spec = vmm.Spec{
		Kernel:    b.cfg.Kernel,
		Initrd:    b.cfg.Initrd,
		CPUs:      b.cfg.CPUs,
		MemoryMiB: b.cfg.MemoryMiB,
		Console:   b.tail,
		Env:       b.cfg.Env,
		TempDir:   b.cfg.TempDir,
	}
	if b.cfg.ConsoleOutput == "" {
		return nil
	}
	f, err := os.OpenFile(b.cfg.ConsoleOutput, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o644)
	if err != nil {
		return fmt.Errorf("open console output file: %w", err)
	}
	b.onUnwind(func() { f.Close() })
	b.conFile = f
	b.spec.Console = io.MultiWriter(b.tail, f)
	return nil
}

// attachNetwork gives the guest a NIC served by a netstack that the policy
// decides, with HTTPS interception under a CA of this boot's own: its key
// never leaves this process and dies with the lane; the guest trusts its
// certificate (control.Setup). Without a policy the guest has no NIC.
func (b *booting) attachNetwork(context.Context) error {
	if b.cfg.Network == nil {
		return nil
	}
	ca, err := httpproxy.NewCA(httpproxy.CAOptions{})
	if err != nil {
		return fmt.Errorf("set up HTTPS interception: %w", err)
	}
	proxy, err := httpproxy.New(httpproxy.Config{CA: ca, ExtraRootsPEM: b.cfg.UpstreamRootsPEM})
	if err != nil {
		return fmt.Errorf("set up HTTPS interception: %w", err)
	}
	b.setup.TrustAnchors = []string{string(ca.CertPEM())}
	stack, err := netpolicy.New(netpolicy.Config{Policy: b.cfg.Network, MTU: nicMTU, HTTP: proxy})
	if err != nil {
		return fmt.Errorf("set up the network: %w", err)
	}
	b.onUnwind(func() { stack.Close() })
	b.stack = stack
	if b.nicHost, b.spec.NIC, err = b.pair("nic"); err != nil {
		return err
	}
	b.spec.NICMTU = nicMTU
	b.spec.Boot.Net = guestNet()
	return nil
}

// attachRoot serves the root disk over NBD from the host (blockstore), so
// every engine reaches it the same way and a COW store can sit in between.
func (b *booting) attachRoot(ctx context.Context) error {
	root, err := openRoot(ctx, b.cfg.RootDisk, b.cfg.RootStore, b.cfg.EphemeralRoot)
	if err != nil {
		return err
	}
	b.onUnwind(root.Close)
	b.root = root
	host, guest, err := b.pair("root-disk")
	if err != nil {
		return err
	}
	b.rootHost = host
	b.spec.RootDisk = vmm.Disk{ReadOnly: root.cow == nil, NBD: guest}
	b.spec.Boot.RootWritable = root.cow != nil
	return nil
}

// attachMounts gives each mount a channel, and the control session one.
func (b *booting) attachMounts(context.Context) error {
	for i, m := range b.cfg.Mounts {
		host, guest, err := b.pair(mountChannel(i))
		if err != nil {
			return err
		}
		b.mountHosts = append(b.mountHosts, host)
		b.spec.Channels = append(b.spec.Channels, vmm.Channel{Name: mountChannel(i), Conn: guest})
		// Unless it is a PosixFileSystem the guest mounts it read-only.
		_, writable := m.FS.(vfs.PosixFileSystem)
		b.spec.Boot.Mounts = append(b.spec.Boot.Mounts, bootparams.Mount{Channel: mountChannel(i), ReadOnly: !writable, Target: m.Target})
	}
	host, guest, err := b.pair(controlChannel)
	if err != nil {
		return err
	}
	b.controlHost = host
	b.spec.Channels = append(b.spec.Channels, vmm.Channel{Name: controlChannel, Conn: guest})
	return nil
}

// controlChannel is the channel init serves the control protocol on.
const controlChannel = "control"

// startMachine starts the VMM. The engine takes the guest ends in spec
// whether it starts or not (vmm.Spec).
func (b *booting) startMachine(ctx context.Context) error {
	b.startAttempted = true
	machine, err := b.cfg.Engine.Start(ctx, b.spec)
	if err != nil {
		return err
	}
	b.machine = machine
	b.onUnwind(func() {
		machine.Kill()
		<-machine.Done()
	})
	return nil
}

// connect opens the control session on the host end of its channel.
func (b *booting) connect(context.Context) error {
	client, err := control.NewClient(b.controlHost)
	if err != nil {
		return err
	}
	b.onUnwind(func() { client.Close() })
	b.client = client
	return nil
}

// serve makes the lane, which from now on owns everything Boot took, and
// starts the host side of each of the guest's devices.
func (b *booting) serve() *Lane {
	cfg := b.cfg
	servicesCtx, stopServices := context.WithCancel(context.Background())
	l := &Lane{
		engine:       cfg.Engine.Name(),
		machine:      b.machine,
		client:       b.client,
		console:      b.tail,
		conFile:      b.conFile,
		closed:       make(chan struct{}),
		stopServices: stopServices,
		stack:        b.stack,
		root:         b.root,
	}
	b.undo = []func(){l.kill}
	l.services.Go(func() {
		// Ends when the VMM exits (its end closes) or at release.
		if err := serveRoot(servicesCtx, b.rootHost, b.root, cfg.Log); err != nil && servicesCtx.Err() == nil && cfg.Log != nil {
			fmt.Fprintf(cfg.Log, "sandbox: root disk: %v\n", err)
		}
	})
	for i, m := range cfg.Mounts {
		conn := b.mountHosts[i]
		l.services.Go(func() {
			// Ends when the VMM exits (its end closes) or at release; Serve
			// closes conn.
			err := vfs.Serve(servicesCtx, conn, m.FS, vfs.Options{Log: cfg.Log})
			if err != nil && servicesCtx.Err() == nil && cfg.Log != nil {
				fmt.Fprintf(cfg.Log, "sandbox: mount %s: %v\n", m.Target, err)
			}
		})
	}
	if b.stack != nil {
		l.services.Go(func() {
			// Ends when the VMM exits (its end of the NIC closes) or at release.
			defer b.nicHost.Close()
			b.stack.Serve(servicesCtx, b.nicHost)
		})
	}
	return l
}

// handshake waits, within the boot timeout, for init to answer the control
// handshake, and turns every way it can fail into the error that says why.
func (b *booting) handshake(ctx context.Context, l *Lane) error {
	bootCtx, cancel := context.WithTimeout(ctx, b.cfg.BootTimeout)
	defer cancel()
	type handshake struct {
		info control.GuestInfo
		err  error
	}
	hs := make(chan handshake, 1)
	go func() {
		info, err := l.client.Handshake(bootCtx, b.setup)
		hs <- handshake{info, err}
	}()
	var err error
	select {
	case r := <-hs:
		if r.err == nil {
			l.Guest = r.info
			go l.watch()
			return nil
		}
		var refused *control.GuestError
		switch {
		case errors.As(r.err, &refused):
			// Init could not do the setup (e.g. install the CA).
			err = &BootError{Reason: guesttext.Printable(refused.Message), ConsoleTail: b.tail.String()}
		case errors.Is(bootCtx.Err(), context.DeadlineExceeded) && ctx.Err() == nil:
			err = &BootTimeoutError{After: b.cfg.BootTimeout, ConsoleTail: b.tail.String()}
		case l.exitedWith(r.err):
			err = l.exitedError()
		default:
			err = fmt.Errorf("sandbox VM boot failed: %w", r.err)
		}
	case <-l.machine.Done():
		err = l.exitedError()
	}
	if reason, ok := bootFailure(b.tail.String()); ok {
		err = &BootError{Reason: reason, ConsoleTail: b.tail.String()}
	}
	return err
}

// watch closes the control session when the VMM exits on its own, so calls
// in flight fail at once rather than when the channel notices.
func (l *Lane) watch() {
	<-l.machine.Done()
	l.client.Close()
}

// exitGrace bounds how long a lost session waits for the VMM's exit to be
// seen: the channel closes when the process exits, a moment before it is
// reaped and its console read to the end.
const exitGrace = time.Second

// exitedWith reports whether err, from a control call, came from the VMM
// exiting. A lost session is how that looks from the channel, so it waits
// (up to exitGrace) for Done; any other error is the caller's or the
// guest's, answered at once.
func (l *Lane) exitedWith(err error) bool {
	select {
	case <-l.machine.Done():
		return true
	default:
	}
	if !errors.Is(err, control.ErrSessionLost) {
		return false
	}
	t := time.NewTimer(exitGrace)
	defer t.Stop()
	select {
	case <-l.machine.Done():
		return true
	case <-t.C:
		return false
	}
}

func (l *Lane) exitedError() error {
	return &ExitedError{Engine: l.engine, Status: l.machine.ExitStatus(), ConsoleTail: l.console.String()}
}

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
	if l.exitedWith(err) {
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
		if serr != nil && !nothingToPersist && !errors.Is(serr, control.ErrSessionLost) && !l.exitedWith(serr) {
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
