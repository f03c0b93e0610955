//go:build cgo && (linux || darwin)

// Command sandbox-krun runs one libkrun microVM for the libkrun engine
// (vmm/krun). libkrun's krun_start_enter takes over the process that calls
// it and exits it when the guest powers off, so the VM cannot run inside
// the Node process: the engine starts this helper as a child.
//
//	sandbox-krun probe [-library PATH]   load libkrun and check the hypervisor; prints "ok" or the problem
//	sandbox-krun run                     run the VM described by the JSON on stdin (vmm/krun.HelperConfig)
//
// On macOS this is the binary that must carry the
// com.apple.security.hypervisor entitlement (vmm/krun/entitlements.plist);
// setup-macos signs it.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"

	"github.com/torkbot/sandbox/vmm/krun"
	"github.com/torkbot/sandbox/vmm/krun/nbdrelay"
)

func init() {
	// libkrun runs its event loop on the thread that calls
	// krun_start_enter; keep main on the process's main thread, which
	// macOS frameworks expect.
	runtime.LockOSThread()
}

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: sandbox-krun probe [-library PATH] | sandbox-krun run < config.json")
		os.Exit(2)
	}
	switch os.Args[1] {
	case "probe":
		fs := flag.NewFlagSet("probe", flag.ExitOnError)
		library := fs.String("library", "", "libkrun to load (default "+krun.DefaultLibrary()+")")
		fs.Parse(os.Args[2:])
		if err := probe(*library); err != nil {
			fmt.Println(err)
			os.Exit(1)
		}
		fmt.Println("ok")
	case "run":
		err := run()
		fmt.Fprintf(os.Stderr, "sandbox-krun: %v\n", err)
		os.Exit(1)
	default:
		fmt.Fprintf(os.Stderr, "sandbox-krun: unknown command %q\n", os.Args[1])
		os.Exit(2)
	}
}

// libraryPaths lists where to look for libkrun: the configured library
// alone, or the platform's default name and then the usual install
// prefixes. macOS's dlopen does not search Homebrew's prefix for a bare
// name (its fallback path is ~/lib:/usr/local/lib:/usr/lib), so Homebrew's
// paths are tried explicitly.
func libraryPaths(l string) []string {
	if l != "" {
		return []string{l}
	}
	if runtime.GOOS == "darwin" {
		return []string{krun.DefaultLibrary(), "/opt/homebrew/lib/libkrun.dylib", "/usr/local/lib/libkrun.dylib"}
	}
	return []string{krun.DefaultLibrary()}
}

// openLibkrun loads the first of libraryPaths(l) that loads. Failing
// that, the error is about a library that was found but is unusable (too
// old), if any, else the first candidate's.
func openLibkrun(l string) (*libkrun, error) {
	var first, found error
	for _, p := range libraryPaths(l) {
		lib, err := loadLibkrun(p)
		if err == nil {
			return lib, nil
		}
		var nf *notLoadedError
		if !errors.As(err, &nf) && found == nil {
			found = err
		}
		if first == nil {
			first = err
		}
	}
	if found != nil {
		return nil, found
	}
	return nil, first
}

// probe checks what selection needs to know: libkrun loads with every
// symbol, and the hypervisor can create a VM.
func probe(library string) error {
	if _, err := openLibkrun(library); err != nil {
		return err
	}
	return checkHypervisor()
}

// run configures libkrun from the config on stdin and enters the VM. It
// returns only on failure.
func run() error {
	var cfg krun.HelperConfig
	if err := json.NewDecoder(io.LimitReader(os.Stdin, 1<<20)).Decode(&cfg); err != nil {
		return fmt.Errorf("read config: %w", err)
	}
	status := os.NewFile(uintptr(cfg.StatusFD), "status")
	if cfg.StatusFD < 0 {
		status = nil
	}
	fail := func(err error) error {
		if status != nil {
			fmt.Fprintf(status, "error: %s\n", strings.ReplaceAll(err.Error(), "\n", "; "))
		}
		return err
	}
	if cfg.Version != krun.HelperConfigVersion {
		return fail(fmt.Errorf("config version %d, this helper speaks %d: the helper and the addon come from different builds (reinstall the package, or point SANDBOX_KRUN_HELPER at the matching sandbox-krun)", cfg.Version, krun.HelperConfigVersion))
	}
	if cfg.ParentFD >= 0 {
		go watchParent(os.NewFile(uintptr(cfg.ParentFD), "parent"))
	}
	lib, err := openLibkrun(cfg.Library)
	if err != nil {
		return fail(err)
	}
	if err := checkHypervisor(); err != nil {
		return fail(err)
	}
	// The channels' unix sockets, in a directory the engine created and
	// removes when this process has exited (libkrun exits the process
	// itself, so nothing here would run to clean up).
	if cfg.SocketDir == "" {
		return fail(errors.New("config has no socket directory"))
	}
	var paths []string
	for _, ch := range cfg.Channels {
		p, err := bridgeChannel(cfg.SocketDir, ch)
		if err != nil {
			return fail(err)
		}
		paths = append(paths, p)
	}
	var diskPath string
	if cfg.Disk != nil {
		if diskPath, err = relayDisk(cfg.SocketDir, *cfg.Disk); err != nil {
			return fail(err)
		}
	}
	ctx, err := configure(lib, &cfg, paths, diskPath)
	if err != nil {
		return fail(err)
	}
	if status != nil {
		fmt.Fprintln(status, "ok")
		status.Close()
	}
	return lib.startEnter(ctx)
}

// Kernel formats of krun_set_kernel (libkrun.h KRUN_KERNEL_FORMAT_*).
const (
	kernelFormatRaw = 0 // arm64 Image
	kernelFormatELF = 1 // x86_64 vmlinux
)

// Disk formats of krun_add_disk2.
const (
	diskFormatRaw   = 0
	diskFormatQCOW2 = 1
)

// configure makes the libkrun calls for cfg, in the order the contract test
// asserts, and returns the context to start.
func configure(lib *libkrun, cfg *krun.HelperConfig, channelPaths []string, diskPath string) (uint32, error) {
	// Errors only: libkrun logs to stderr, which the engine marks "[krun]"
	// in the console record.
	if err := lib.setLogLevel(1); err != nil {
		return 0, err
	}
	ctx, err := lib.createCtx()
	if err != nil {
		return 0, err
	}
	if err := lib.setVMConfig(ctx, uint8(cfg.CPUs), uint32(cfg.MemoryMiB)); err != nil {
		return 0, err
	}
	format := uint32(kernelFormatELF)
	if runtime.GOARCH == "arm64" {
		format = kernelFormatRaw
	}
	if err := lib.setKernel(ctx, cfg.Kernel, format, cfg.Initrd, cfg.Cmdline); err != nil {
		return 0, err
	}
	// The console: a legacy serial port (ttyS0, built into the guest
	// kernel, so it works from the first message) writing to stdout, which
	// the engine reads; no input. The implicit virtio console would need a
	// module and lose early messages.
	if err := lib.ctxCall("krun_disable_implicit_console", ctx); err != nil {
		return 0, err
	}
	if err := lib.addSerialConsole(ctx, -1, 1); err != nil {
		return 0, err
	}
	// vsock without TSI: libkrun's implicit vsock would let the guest open
	// host sockets through it (TSI), past the network policy. Our channels
	// are the only vsock traffic.
	if err := lib.ctxCall("krun_disable_implicit_vsock", ctx); err != nil {
		return 0, err
	}
	if err := lib.addVsock(ctx, 0); err != nil {
		return 0, err
	}
	for i, ch := range cfg.Channels {
		if err := lib.addVsockPort(ctx, ch.Port, channelPaths[i], false); err != nil {
			return 0, err
		}
	}
	if cfg.Disk != nil {
		if err := lib.addVsockPort(ctx, cfg.Disk.Port, diskPath, false); err != nil {
			return 0, err
		}
	}
	if cfg.DiskPath != "" {
		format := uint32(diskFormatRaw)
		if cfg.DiskFormat == "qcow2" {
			format = diskFormatQCOW2
		}
		if err := lib.addDisk2(ctx, "root", cfg.DiskPath, format, cfg.DiskReadOnly); err != nil {
			return 0, err
		}
	}
	if cfg.NICFD >= 0 {
		mac, err := parseMAC(cfg.MAC)
		if err != nil {
			return 0, err
		}
		// No offload features: the guest then sends complete frames with
		// full checksums, which the host's netstack verifies.
		if err := lib.addNetUnixstream(ctx, cfg.NICFD, mac, 0, 0); err != nil {
			return 0, err
		}
	}
	return ctx, nil
}

func parseMAC(s string) ([6]byte, error) {
	var mac [6]byte
	hw, err := net.ParseMAC(s)
	if err != nil || len(hw) != 6 {
		return mac, fmt.Errorf("bad MAC address %q", s)
	}
	copy(mac[:], hw)
	return mac, nil
}

// watchParent exits when the engine's process dies: the pipe's write end
// lives only there. Linux has PDEATHSIG too; macOS has only this.
func watchParent(f *os.File) {
	io.Copy(io.Discard, f)
	os.Exit(1)
}

// bridgeChannel listens on the channel's unix socket, which libkrun
// connects to when the guest connects to the vsock port, and copies bytes
// between that one connection and the channel's fd. A channel carries one
// session: once it ends, the host end is closed.
func bridgeChannel(dir string, ch krun.HelperChannel) (string, error) {
	host, err := fdConn(ch.FD, "channel "+ch.Name)
	if err != nil {
		return "", err
	}
	path := filepath.Join(dir, strconv.FormatUint(uint64(ch.Port), 10)+".sock")
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
	if err != nil {
		return "", fmt.Errorf("channel %s: %w", ch.Name, err)
	}
	go func() {
		conn, err := ln.AcceptUnix()
		// One connection: the socket goes away with the listener.
		ln.Close()
		if err != nil {
			host.Close()
			return
		}
		splice(conn, host)
	}()
	return path, nil
}

// splice copies both ways until both directions have ended, passing each
// end-of-stream on as a half close.
func splice(a, b *net.UnixConn) {
	done := make(chan struct{}, 2)
	cp := func(dst, src *net.UnixConn) {
		io.Copy(dst, src)
		dst.CloseWrite()
		done <- struct{}{}
	}
	go cp(a, b)
	go cp(b, a)
	<-done
	<-done
	a.Close()
	b.Close()
}

// relayDisk opens the NBD session with the host on the disk's fd and
// serves every guest connection to the disk port from it (nbdrelay), so the
// guest may reconnect.
func relayDisk(dir string, d krun.HelperDisk) (string, error) {
	host, err := fdConn(d.FD, "disk")
	if err != nil {
		return "", err
	}
	relay, err := nbdrelay.Open(host, "root")
	if err != nil {
		host.Close()
		return "", fmt.Errorf("root disk: %w", err)
	}
	path := filepath.Join(dir, strconv.FormatUint(uint64(d.Port), 10)+".sock")
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
	if err != nil {
		return "", fmt.Errorf("root disk: %w", err)
	}
	ctx := context.Background()
	go func() {
		// The host session ends only with the VM (or the host's server).
		relay.Run(ctx)
		ln.Close()
	}()
	go func() {
		var prev *net.UnixConn
		for {
			conn, err := ln.AcceptUnix()
			if err != nil {
				return
			}
			// A reconnecting guest has given up the old connection, which
			// may not have failed on this side yet: end it, so its late
			// replies go nowhere.
			if prev != nil {
				prev.Close()
			}
			prev = conn
			go relay.ServeGuest(ctx, conn)
		}
	}()
	return path, nil
}

func fdConn(fd int, what string) (*net.UnixConn, error) {
	f := os.NewFile(uintptr(fd), what)
	if f == nil {
		return nil, fmt.Errorf("%s: fd %d is not open", what, fd)
	}
	c, err := net.FileConn(f)
	f.Close()
	if err != nil {
		return nil, fmt.Errorf("%s: fd %d: %w", what, fd, err)
	}
	uc, ok := c.(*net.UnixConn)
	if !ok {
		c.Close()
		return nil, fmt.Errorf("%s: fd %d is not a unix socket", what, fd)
	}
	return uc, nil
}
