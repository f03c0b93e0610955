//go:build linux

// Command sandbox-init is PID 1 of a sandbox VM. It mounts the root
// filesystem the host attached and switches into it, then serves the
// control protocol (package control) on the channel named "control" until
// the host asks it to shut down or the channel is lost, and powers the VM
// off. It never hangs: a fatal error is logged as "sandbox-init: fatal: ..."
// on the console and powers off too. README.md lists the boot sequence and
// the kernel command line parameters.
package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"strings"
	"sync"

	"golang.org/x/sys/unix"

	"github.com/torkbot/sandbox/bootparams"
	"github.com/torkbot/sandbox/control"
	"github.com/torkbot/sandbox/sandbox-init/channel"
	"github.com/torkbot/sandbox/sandbox-init/reaper"
	"github.com/torkbot/sandbox/sandbox-init/runner"
)

// controlChannel is the name of the channel the host talks to init on.
const controlChannel = "control"

func main() {
	if os.Getpid() != 1 {
		fmt.Fprintln(os.Stderr, "sandbox-init: must run as PID 1 of a sandbox VM")
		os.Exit(2)
	}
	pid1 := &initProcess{log: &console{w: os.Stderr}}
	pid1.mark("init")
	// PID 1 must outlive stray signals, which the Go runtime would turn into
	// an exit (or a crash, for SIGQUIT). Ignoring them (SIG_IGN) would be
	// inherited by every command; caught signals are reset to the default
	// in children. So catch them into a channel nobody reads: once it is
	// full they are dropped.
	signal.Notify(make(chan os.Signal, 1), unix.SIGTERM, unix.SIGINT, unix.SIGHUP, unix.SIGQUIT)
	defer func() {
		if r := recover(); r != nil {
			pid1.fatal(fmt.Errorf("panic: %v", r))
		}
	}()
	if err := pid1.run(); err != nil {
		pid1.fatal(err)
	}
	powerOff(pid1.log)
}

// initProcess is the state of PID 1.
type initProcess struct {
	log *console
	// boot is the boot timeline reported to the host.
	boot []control.BootEvent

	// hostMounts are the host filesystems to unmount at shutdown.
	hostMounts []bootparams.Mount

	stopOnce sync.Once
	stopErr  error
}

func (p *initProcess) mark(event string) {
	p.boot = append(p.boot, control.BootEvent{Name: event, At: sinceBoot()})
}

// run boots the guest and serves the host until shutdown or channel loss.
// It returns an error only for a fatal boot failure.
func (p *initProcess) run() error {
	if err := mountEarly(); err != nil {
		return err
	}
	if err := p.log.attach(); err != nil {
		p.log.logf("warning: no /dev/console, logging to stderr: %v", err)
	}
	var uts unix.Utsname
	if err := unix.Uname(&uts); err != nil {
		return fmt.Errorf("uname: %w", err)
	}
	kernelRelease := unix.ByteSliceToString(uts.Release[:])
	p.log.logf("starting on Linux %s", kernelRelease)

	cmdline, err := os.ReadFile("/proc/cmdline")
	if err != nil {
		return err
	}
	cfg, warnings, err := bootparams.Parse(string(cmdline))
	if err != nil {
		return fmt.Errorf("kernel command line: %w", err)
	}
	for _, w := range warnings {
		p.log.logf("warning: %s", w)
	}

	channel.Configure(cfg.VsockPorts)
	if cfg.RootNBD != "" {
		dev, err := attachRootNBD(cfg.RootNBD, p.log)
		if err != nil {
			return err
		}
		cfg.RootDevice, cfg.RootNBD = dev, ""
	}
	if err := mountRoot(cfg); err != nil {
		return err
	}
	if err := switchRoot(newRootDir, cfg.RootWritable, p.log); err != nil {
		return err
	}
	if err := mountSystem(cfg.RootWritable); err != nil {
		return err
	}
	mode := "ro"
	if cfg.RootWritable {
		mode = "rw"
	}
	p.mark("root")
	device, fsType := cfg.Root()
	p.log.logf("root %s (%s, %s) mounted", device, fsType, mode)

	if err := unix.Sethostname([]byte(cfg.HostnameOrDefault())); err != nil {
		return fmt.Errorf("set hostname: %w", err)
	}
	if err := loopbackUp(); err != nil {
		return err
	}
	if cfg.Net != nil {
		if err := configureNetwork(cfg.Net); err != nil {
			return err
		}
		p.log.logf("network %s up (%s, %s)", ethernet, cfg.Net.IP4, cfg.Net.IP6)
	}

	// The reaper must run before the first process starts.
	r := reaper.New(reaper.Wait4)
	go r.Run(context.Background())

	// Host filesystems: after the root switch (their targets are in the
	// new root), before the host is told the guest is ready.
	p.hostMounts = cfg.Mounts
	if err := mountHostFilesystems(p.hostMounts, p.log); err != nil {
		return err
	}
	if len(p.hostMounts) > 0 {
		p.log.logf("mounted %d host filesystems", len(p.hostMounts))
	}

	ch, err := channel.Open(controlChannel)
	if err != nil {
		return err
	}
	p.mark("ready")
	srv := &control.Server{
		Handler:       handler{Runner: runner.New(r), init: p},
		Env:           commandEnv(os.Environ()),
		KernelRelease: kernelRelease,
		Boot:          p.boot,
		Log:           p.log,
		Prepare:       new(trustSetup).prepare,
	}
	p.log.logf("serving on channel %q", controlChannel)
	if err := srv.Serve(context.Background(), ch); err != nil {
		p.log.logf("control channel lost: %v", err)
	} else {
		p.log.logf("shutdown requested by the host")
	}
	if err := p.stop(); err != nil {
		p.log.logf("warning: %v", err)
	}
	return nil
}

// stop runs stopGuest once; the host's shutdown request and the end of
// run both call it.
func (p *initProcess) stop() error {
	p.stopOnce.Do(func() { p.stopErr = stopGuest(p.log, p.hostMounts) })
	return p.stopErr
}

// fatal reports err and powers off.
func (p *initProcess) fatal(err error) {
	// One line, so that the host can quote it.
	p.log.logf("fatal: %s", strings.ReplaceAll(err.Error(), "\n", "; "))
	if err := p.stop(); err != nil {
		p.log.logf("warning: %v", err)
	}
	powerOff(p.log)
}

// defaultPath is the PATH commands get when the kernel gave init none.
const defaultPath = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

// commandEnv is the environment every command starts from: init's own, as
// the kernel handed it (HOME=/ and TERM=linux), as 0.6.0 gave, plus
// defaultPath when it has no PATH (0.6.0 looked names up in libc's default
// path; with a PATH, programs the command starts find theirs too).
func commandEnv(environ []string) map[string]string {
	env := map[string]string{"PATH": defaultPath}
	for _, kv := range environ {
		if k, v, ok := strings.Cut(kv, "="); ok && k != "" {
			env[k] = v
		}
	}
	return env
}

// handler serves the host's operations: commands through the runner,
// shutdown by stopping the guest.
type handler struct {
	*runner.Runner
	init *initProcess
}

var _ control.Handler = handler{}

func (h handler) Shutdown(context.Context) error { return h.init.stop() }
