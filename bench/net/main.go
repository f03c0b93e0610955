// Command net measures the sandbox network (package netpolicy) against the
// user-mode networks containers use, in the same run on the same machine:
// slirp4netns (the baseline), pasta (passt) and, when a binary is given,
// gvproxy (gvisor-tap-vsock). `npm run bench` runs it (scripts/bench.sh).
//
// Each contender serves a fresh "guest" network namespace whose TAP device
// carries the guest's traffic: slirp4netns and pasta open their own TAP;
// for netpolicy and gvproxy a bridge in this process plays the VMM, copying
// TAP frames over the QEMU stream framing (package link) to a netpolicy.Stack
// (accept-all policy) or to gvproxy's -listen-qemu socket. The client is this
// binary run in the guest namespace; the origin is a Go server of this
// process on the loopback of a namespace of its own (198.51.100.10), one veth
// hop from this one, since netpolicy refuses its host's own addresses. Two
// figures per MTU:
//
//   - throughput: one TCP download of -bytes, guest ← origin, in Gbit/s;
//   - connection rate: -conns sequential short TCP connections (connect,
//     read one byte, see EOF), in connections/s.
//
// It runs itself again in a new network and mount namespace, refuses to go
// on if that namespace has a default route, kills everything it started,
// and ends within -timeout.
package main

import (
	"bufio"
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/torkbot/sandbox/internal/netns"
	"github.com/torkbot/sandbox/internal/sockpair"
	"github.com/torkbot/sandbox/netpolicy"
	"github.com/torkbot/sandbox/netpolicy/link"
	"github.com/torkbot/sandbox/vmm"
)

// envInNetns marks the re-executed process running in its own namespaces.
const envInNetns = "SANDBOX_BENCH_NET_IN_NETNS"

var (
	origin     = netip.MustParseAddr("198.51.100.10") // in originNS
	originNS   = "benchorigin"
	bulkAddr   = netip.AddrPortFrom(origin, 5001)
	connAddr   = netip.AddrPortFrom(origin, 5002)
	guestNS    = "benchguest"
	tapName    = "bt0"
	pastaIface = "pbr0" // a port-less bridge: pasta's template interface
)

var (
	bytesFlag = flag.Int64("bytes", 256<<20, "bytes per bulk download")
	connsFlag = flag.Int("conns", 500, "short connections per connection-rate run")
	runsFlag  = flag.Int("runs", 3, "runs per contender and MTU, interleaved; the median is printed")
	mtusFlag  = flag.String("mtus", "1500,65520", "guest MTUs to measure")
	gvproxy   = flag.String("gvproxy", "", "gvproxy binary; empty skips gvproxy")
	gvSkip    = flag.String("gvproxy-skip", "", "why no gvproxy binary is given (printed)")
	timeout   = flag.Duration("timeout", 110*time.Second, "bound on the whole run")
	results   = flag.String("results", "", "file to append netpolicy's ratios to, as bench/promises.mjs reads them")
	client    = flag.String("client", "", "internal: run as the guest's client (bulk|conns)")
)

func main() {
	flag.Parse()
	var err error
	switch {
	case *client != "":
		err = runClient(*client)
	case os.Getenv(envInNetns) == "":
		err = reexec()
	default:
		err = runBench()
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "bench/net:", err)
		os.Exit(1)
	}
}

// reexec runs this program again in new network and mount namespaces, in
// its own process group, killed at -timeout.
func reexec() error {
	if os.Geteuid() != 0 {
		fmt.Println("network bench skipped: needs root for network namespaces and TAP devices")
		return nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), *timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, "/proc/self/exe", os.Args[1:]...)
	cmd.Env = append(os.Environ(), envInNetns+"=1")
	cmd.Stdout, cmd.Stderr = os.Stdout, os.Stderr
	cmd.SysProcAttr = &syscall.SysProcAttr{Cloneflags: syscall.CLONE_NEWNET | syscall.CLONE_NEWNS, Setpgid: true}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	err := cmd.Run()
	// Whatever the outcome, nothing of the group may survive.
	syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
	if ctx.Err() != nil {
		return fmt.Errorf("exceeded %s", *timeout)
	}
	return err
}

// contender is one user-mode network under test. start attaches it to the
// guest namespace with the given MTU (configuring the guest's link, address
// and default route) and returns the function that detaches it.
type contender struct {
	name  string
	skip  string // why it is not measured, if so
	start func(ctx context.Context, mtu int) (stop func(), err error)
}

type result struct {
	gbps, connsPerSec float64
	err               error
}

func runBench() error {
	// Leave time to print and clean up before reexec kills the run.
	budget := time.Now().Add(*timeout - 15*time.Second)
	if err := unix.Mount("", "/", "", unix.MS_REC|unix.MS_PRIVATE, ""); err != nil {
		return fmt.Errorf("cannot make mounts private: %w", err)
	}
	// `ip netns` state lives in this mount namespace only.
	if err := os.MkdirAll("/run/netns", 0o755); err != nil {
		return err
	}
	if err := unix.Mount("tmpfs", "/run/netns", "tmpfs", 0, ""); err != nil {
		return fmt.Errorf("cannot mount /run/netns: %w", err)
	}
	if err := requireIsolated(); err != nil {
		return err
	}
	// The origin lives in a namespace of its own, one veth hop away:
	// netpolicy refuses this namespace's own addresses as the host's.
	for _, c := range [][]string{
		{"ip", "link", "set", "lo", "up"},
		{"ip", "netns", "add", originNS},
		{"ip", "link", "add", "bnup0", "type", "veth", "peer", "name", "bnup1", "netns", originNS},
		{"ip", "link", "set", "bnup0", "up"},
		{"ip", "addr", "add", "10.255.1.1/30", "dev", "bnup0"},
		{"ip", "netns", "exec", originNS, "ip", "link", "set", "lo", "up"},
		{"ip", "netns", "exec", originNS, "ip", "link", "set", "bnup1", "up"},
		{"ip", "netns", "exec", originNS, "ip", "addr", "add", "10.255.1.2/30", "dev", "bnup1"},
		{"ip", "netns", "exec", originNS, "ip", "addr", "add", origin.String() + "/32", "dev", "lo"},
		{"ip", "route", "add", origin.String() + "/32", "via", "10.255.1.2"},
		{"ip", "link", "add", pastaIface, "type", "bridge"},
		{"ip", "addr", "add", "192.0.2.1/24", "dev", pastaIface},
		{"ip", "link", "set", pastaIface, "up"},
	} {
		if err := run(c...); err != nil {
			return err
		}
	}
	if err := requireIsolated(); err != nil {
		return err
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	if err := startOrigins(ctx); err != nil {
		return err
	}
	var mtus []int
	for _, s := range strings.Split(*mtusFlag, ",") {
		m, err := strconv.Atoi(strings.TrimSpace(s))
		if err != nil {
			return fmt.Errorf("bad -mtus: %w", err)
		}
		mtus = append(mtus, m)
	}

	contenders := []contender{
		{name: "slirp4netns", start: startSlirp},
		{name: "netpolicy", start: startNetpolicy},
		{name: "pasta", start: startPasta},
		{name: "gvproxy", start: startGvproxy},
	}
	for i := range contenders {
		c := &contenders[i]
		switch c.name {
		case "slirp4netns", "pasta":
			if _, err := exec.LookPath(c.name); err != nil {
				c.skip = c.name + " not installed"
			}
		case "gvproxy":
			if *gvproxy == "" {
				c.skip = "no binary"
				if *gvSkip != "" {
					c.skip = *gvSkip
				}
			}
		}
	}

	fmt.Printf("network: %d MiB download guest ← origin, %d sequential short connections; median of %d interleaved runs; ratio = contender / slirp4netns, same run\n", *bytesFlag>>20, *connsFlag, *runsFlag)
	fmt.Println("netpolicy and gvproxy are fed by a TAP ↔ stream bridge playing the VMM; slirp4netns and pasta read their TAP themselves")
	for _, c := range contenders {
		if c.skip != "" {
			fmt.Printf("%s: skipped: %s\n", c.name, c.skip)
		}
	}
	for _, mtu := range mtus {
		// Contenders take turns, run after run, so that drift in the
		// machine's speed spreads over all of them.
		// A contender that failed is not run again at this MTU: a hang
		// costs one client timeout, not one per run.
		runs := map[string][]result{}
		failed := map[string]bool{}
		for range *runsFlag {
			for _, c := range contenders {
				if c.skip != "" || failed[c.name] {
					continue
				}
				r := result{err: errors.New("not measured: past the run's time bound")}
				if time.Now().Before(budget) {
					mctx, cancel := context.WithDeadline(ctx, budget.Add(10*time.Second))
					r = measure(mctx, c, mtu)
					cancel()
				}
				failed[c.name] = r.err != nil
				runs[c.name] = append(runs[c.name], r)
			}
		}
		medians := map[string]result{}
		for name, rs := range runs {
			medians[name] = median(rs)
		}
		if err := printRow(6, fmt.Sprintf("throughput MTU %d", mtu), contenders, medians, func(r result) float64 { return r.gbps }, "Gbit/s"); err != nil {
			return err
		}
		if err := printRow(7, fmt.Sprintf("connections MTU %d", mtu), contenders, medians, func(r result) float64 { return r.connsPerSec }, "conn/s"); err != nil {
			return err
		}
	}
	return nil
}

// median returns the median of each figure, or the first error.
func median(rs []result) result {
	var g, c []float64
	for _, r := range rs {
		if r.err != nil {
			return r
		}
		g, c = append(g, r.gbps), append(c, r.connsPerSec)
	}
	mid := func(xs []float64) float64 {
		slices.Sort(xs)
		return xs[len(xs)/2]
	}
	return result{gbps: mid(g), connsPerSec: mid(c)}
}

// printRow prints one figure for every contender, and records netpolicy's
// ratio to slirp4netns as SPECIFICATION.md's row (bench/promises.mjs).
func printRow(row int, title string, cs []contender, rs map[string]result, v func(result) float64, unit string) error {
	base, baseOK := rs["slirp4netns"]
	var parts []string
	for _, c := range cs {
		r, ok := rs[c.name]
		switch {
		case !ok:
			continue
		case r.err != nil:
			parts = append(parts, fmt.Sprintf("%s failed (%v)", c.name, r.err))
		case c.name == "slirp4netns":
			parts = append(parts, fmt.Sprintf("%s %.2f %s", c.name, v(r), unit))
		case baseOK && base.err == nil && v(base) > 0:
			parts = append(parts, fmt.Sprintf("%s %.2f %s (ratio %.2f)", c.name, v(r), unit, v(r)/v(base)))
			if c.name == "netpolicy" {
				if err := recordRatio(row, title, v(r)/v(base)); err != nil {
					return err
				}
			}
		default:
			parts = append(parts, fmt.Sprintf("%s %.2f %s", c.name, v(r), unit))
		}
	}
	fmt.Printf("%s: %s\n", title, strings.Join(parts, ", "))
	return nil
}

// recordRatio appends one result line to -results, if given.
func recordRatio(row int, label string, ratio float64) error {
	if *results == "" {
		return nil
	}
	line, err := json.Marshal(map[string]any{"row": row, "label": label, "ratio": ratio})
	if err != nil {
		return err
	}
	f, err := os.OpenFile(*results, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o644)
	if err != nil {
		return err
	}
	defer f.Close()
	_, err = f.Write(append(line, '\n'))
	return err
}

// measure runs both figures for one contender at one MTU in a fresh guest
// namespace, and removes the namespace after.
func measure(ctx context.Context, c contender, mtu int) (r result) {
	if err := run("ip", "netns", "add", guestNS); err != nil {
		return result{err: err}
	}
	defer run("ip", "netns", "del", guestNS)
	if err := run("ip", "-n", guestNS, "link", "set", "lo", "up"); err != nil {
		return result{err: err}
	}
	stop, err := c.start(ctx, mtu)
	if err != nil {
		return result{err: err}
	}
	defer stop()
	if got, err := guestMTU(); err != nil || got != mtu {
		return result{err: fmt.Errorf("guest MTU is %d, want %d (%v)", got, mtu, err)}
	}
	// Warm up: neighbour resolution, first-flow setup.
	if _, err := guestClient(ctx, "conns", connAddr, 5); err != nil {
		return result{err: err}
	}
	secs, err := guestClient(ctx, "bulk", bulkAddr, *bytesFlag)
	if err != nil {
		return result{err: err}
	}
	r.gbps = float64(*bytesFlag) * 8 / secs / 1e9
	secs, err = guestClient(ctx, "conns", connAddr, int64(*connsFlag))
	if err != nil {
		return result{err: err}
	}
	r.connsPerSec = float64(*connsFlag) / secs
	return r
}

// guestMTU reads the MTU of the guest's default route's device.
func guestMTU() (int, error) {
	out, err := exec.Command("ip", "-n", guestNS, "-o", "route", "show", "default").Output()
	if err != nil {
		return 0, err
	}
	f := strings.Fields(string(out))
	for i := range f {
		if f[i] == "dev" && i+1 < len(f) {
			b, err := exec.Command("ip", "netns", "exec", guestNS, "cat", "/sys/class/net/"+f[i+1]+"/mtu").Output()
			if err != nil {
				return 0, err
			}
			return strconv.Atoi(strings.TrimSpace(string(b)))
		}
	}
	return 0, fmt.Errorf("no default route in the guest: %q", out)
}

// guestClient runs this binary as the client in the guest namespace and
// returns the seconds it measured.
func guestClient(ctx context.Context, mode string, addr netip.AddrPort, n int64) (float64, error) {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	self, err := os.Executable()
	if err != nil {
		return 0, err
	}
	out, err := exec.CommandContext(ctx, "ip", "netns", "exec", guestNS, self,
		"-client", mode, "-addr", addr.String(), "-n", strconv.FormatInt(n, 10)).CombinedOutput()
	if err != nil {
		return 0, fmt.Errorf("%s client: %v: %s", mode, err, strings.TrimSpace(string(out)))
	}
	var r struct{ Seconds float64 }
	if err := json.Unmarshal(out, &r); err != nil {
		return 0, fmt.Errorf("%s client: %q: %w", mode, out, err)
	}
	return r.Seconds, nil
}

var (
	clientAddr = flag.String("addr", "", "internal: origin address for -client")
	clientN    = flag.Int64("n", 0, "internal: bytes (bulk) or connections (conns) for -client")
)

// runClient is the guest's side: bulk asks the origin for n bytes and reads
// them; conns opens n connections one after the other, each reading to EOF.
func runClient(mode string) error {
	start := time.Now()
	switch mode {
	case "bulk":
		c, err := net.Dial("tcp", *clientAddr)
		if err != nil {
			return err
		}
		defer c.Close()
		if err := binary.Write(c, binary.BigEndian, *clientN); err != nil {
			return err
		}
		got, err := io.Copy(io.Discard, c)
		if err != nil || got != *clientN {
			return fmt.Errorf("read %d of %d bytes: %v", got, *clientN, err)
		}
	case "conns":
		for range *clientN {
			c, err := net.Dial("tcp", *clientAddr)
			if err != nil {
				return err
			}
			b, err := io.ReadAll(c)
			c.Close()
			if err != nil || len(b) != 1 {
				return fmt.Errorf("short connection read %q: %v", b, err)
			}
		}
	default:
		return fmt.Errorf("unknown client mode %q", mode)
	}
	return json.NewEncoder(os.Stdout).Encode(struct{ Seconds float64 }{time.Since(start).Seconds()})
}

// startOrigins serves bulk (send the requested number of bytes) and conns
// (send one byte, close) until ctx ends.
func startOrigins(ctx context.Context) error {
	serve := func(addr netip.AddrPort, handle func(net.Conn)) error {
		var l net.Listener
		var err error
		if nerr := netns.Do("/run/netns/"+originNS, func() { l, err = net.Listen("tcp", addr.String()) }); nerr != nil {
			return nerr
		}
		if err != nil {
			return err
		}
		context.AfterFunc(ctx, func() { l.Close() })
		go func() {
			for {
				c, err := l.Accept()
				if err != nil {
					return
				}
				go func() {
					defer c.Close()
					handle(c)
				}()
			}
		}()
		return nil
	}
	chunk := make([]byte, 1<<20)
	if err := serve(bulkAddr, func(c net.Conn) {
		var n int64
		if binary.Read(c, binary.BigEndian, &n) != nil {
			return
		}
		for n > 0 {
			w, err := c.Write(chunk[:min(n, int64(len(chunk)))])
			if err != nil {
				return
			}
			n -= int64(w)
		}
	}); err != nil {
		return err
	}
	return serve(connAddr, func(c net.Conn) { c.Write([]byte{1}) })
}

// startSlirp runs slirp4netns on a TAP it creates in the guest namespace
// (guest 10.0.2.100, gateway 10.0.2.2).
func startSlirp(ctx context.Context, mtu int) (func(), error) {
	if mtu > 65521 {
		return nil, fmt.Errorf("slirp4netns supports MTU ≤ 65521")
	}
	r, w, err := os.Pipe()
	if err != nil {
		return nil, err
	}
	defer r.Close()
	cmd := exec.Command("slirp4netns", "--configure", "--disable-host-loopback", fmt.Sprintf("--mtu=%d", mtu),
		"--ready-fd=3", "--netns-type=path", "/run/netns/"+guestNS, tapName)
	cmd.ExtraFiles = []*os.File{w}
	stop, err := startDaemon(cmd)
	w.Close()
	if err != nil {
		return nil, err
	}
	ready := make(chan error, 1)
	go func() {
		b := make([]byte, 1)
		_, err := r.Read(b)
		ready <- err
	}()
	select {
	case err = <-ready:
	case <-time.After(5 * time.Second):
		err = errors.New("not ready after 5 s")
	}
	if err != nil {
		stop()
		return nil, fmt.Errorf("slirp4netns: %w: %s", err, cmd.Stdout)
	}
	return stop, nil
}

// startPasta runs pasta attached to the guest namespace. It needs a
// template interface even with every address given: pbr0, a bridge with no
// port (lo is refused). As root it must be told to stay root, or it cannot
// join the namespace.
func startPasta(ctx context.Context, mtu int) (func(), error) {
	if mtu > 65520 {
		return nil, fmt.Errorf("pasta supports MTU ≤ 65520")
	}
	cmd := exec.Command("pasta", "--config-net", "-f", "-q", "--runas", "0:0", "-i", pastaIface,
		"-a", "10.0.2.2", "-n", "24", "-g", "10.0.2.1", "-m", strconv.Itoa(mtu),
		"-t", "none", "-u", "none", "-T", "none", "-U", "none", "--netns", "/run/netns/"+guestNS)
	stop, err := startDaemon(cmd)
	if err != nil {
		return nil, err
	}
	if err := waitDefaultRoute(5 * time.Second); err != nil {
		stop()
		return nil, fmt.Errorf("pasta: %w: %s", err, cmd.Stdout)
	}
	return stop, nil
}

// startNetpolicy attaches a netpolicy.Stack with an accept-all policy to a
// TAP in the guest namespace through the VMM bridge.
func startNetpolicy(ctx context.Context, mtu int) (func(), error) {
	st, err := netpolicy.New(netpolicy.Config{
		Policy: netpolicy.PolicyFunc(func(context.Context, netpolicy.Flow) (netpolicy.Decision, error) {
			return netpolicy.Decision{Action: netpolicy.Accept}, nil
		}),
		MTU: uint32(mtu),
	})
	if err != nil {
		return nil, err
	}
	tap, err := guestTAP(mtu, "10.0.2.2/24", "10.0.2.1")
	if err != nil {
		return nil, err
	}
	stackEnd, vmEnd, err := sockpair.Conns()
	if err != nil {
		tap.Close()
		return nil, err
	}
	served := make(chan error, 1)
	go func() { served <- st.Serve(ctx, stackEnd) }()
	bridged := make(chan struct{})
	go func() {
		defer close(bridged)
		bridgeTAP(tap, vmEnd, mtu)
	}()
	return func() {
		st.Close()
		<-served
		<-bridged
	}, nil
}

// startGvproxy runs gvproxy listening for a QEMU stream and attaches a TAP
// in the guest namespace to it through the VMM bridge (guest 192.168.127.2,
// gateway 192.168.127.1: gvproxy's defaults).
func startGvproxy(ctx context.Context, mtu int) (func(), error) {
	dir, err := os.MkdirTemp("", "bench-gvproxy")
	if err != nil {
		return nil, err
	}
	sock := filepath.Join(dir, "qemu.sock")
	cmd := exec.Command(*gvproxy, "-listen-qemu", "unix://"+sock, "-mtu", strconv.Itoa(mtu), "-ssh-port", "-1")
	stopProc, err := startDaemon(cmd)
	if err != nil {
		os.RemoveAll(dir)
		return nil, err
	}
	stop := func() { stopProc(); os.RemoveAll(dir) }
	var conn net.Conn
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		if conn, err = net.Dial("unix", sock); err == nil {
			break
		}
		if time.Now().After(deadline) {
			stop()
			return nil, fmt.Errorf("gvproxy: %w: %s", err, cmd.Stdout)
		}
	}
	tap, err := guestTAP(mtu, "192.168.127.2/24", "192.168.127.1")
	if err != nil {
		conn.Close()
		stop()
		return nil, err
	}
	bridged := make(chan struct{})
	go func() {
		defer close(bridged)
		bridgeTAP(tap, conn, mtu)
	}()
	return func() {
		conn.Close()
		tap.Close()
		<-bridged
		stop()
	}, nil
}

// startDaemon starts cmd, collecting its output (cmd.Stdout, printable
// with %s), killed with this process (Pdeathsig) or by the returned stop.
func startDaemon(cmd *exec.Cmd) (stop func(), err error) {
	out := &vmm.OutputBuffer{}
	cmd.Stdout, cmd.Stderr = out, out
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	return func() {
		cmd.Process.Kill()
		cmd.Wait()
	}, nil
}

// waitDefaultRoute waits until the guest namespace has a default route.
func waitDefaultRoute(d time.Duration) error {
	for deadline := time.Now().Add(d); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		out, _ := exec.Command("ip", "-n", guestNS, "route", "show", "default").Output()
		if len(strings.TrimSpace(string(out))) > 0 {
			return nil
		}
	}
	return fmt.Errorf("guest has no default route after %s", d)
}

// guestTAP creates a TAP here, moves it into the guest namespace and gives
// the guest addr and a default route via gw.
func guestTAP(mtu int, addr, gw string) (*os.File, error) {
	fd, err := unix.Open("/dev/net/tun", unix.O_RDWR|unix.O_NONBLOCK|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("no TAP support: %w", err)
	}
	ifr, err := unix.NewIfreq(tapName)
	if err != nil {
		unix.Close(fd)
		return nil, err
	}
	ifr.SetUint16(unix.IFF_TAP | unix.IFF_NO_PI)
	if err := unix.IoctlIfreq(fd, unix.TUNSETIFF, ifr); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("TUNSETIFF: %w", err)
	}
	tap := os.NewFile(uintptr(fd), tapName)
	for _, c := range [][]string{
		{"ip", "link", "set", tapName, "netns", guestNS},
		{"ip", "-n", guestNS, "link", "set", tapName, "mtu", strconv.Itoa(mtu), "up"},
		{"ip", "-n", guestNS, "addr", "add", addr, "dev", tapName},
		{"ip", "-n", guestNS, "route", "add", "default", "via", gw},
	} {
		if err := run(c...); err != nil {
			tap.Close()
			return nil, err
		}
	}
	return tap, nil
}

// bridgeTAP plays the VMM: each TAP frame goes to vm length-prefixed, and
// back. It returns when either side closes, closing both.
func bridgeTAP(tap *os.File, vm net.Conn, mtu int) {
	defer tap.Close()
	defer vm.Close()
	done := make(chan struct{})
	go func() {
		defer close(done)
		r := bufio.NewReaderSize(vm, 1<<18)
		buf := make([]byte, link.MaxFrameSize(uint32(mtu)))
		for {
			n, err := link.ReadFrame(r, buf)
			if err != nil {
				tap.Close()
				return
			}
			tap.Write(buf[:n])
		}
	}()
	// The length prefix goes in front of the frame in place: one write, no
	// copy (link.WriteFrame's layout).
	buf := make([]byte, link.LengthSize+1<<16)
	for {
		n, err := tap.Read(buf[link.LengthSize:])
		if err != nil {
			break
		}
		binary.BigEndian.PutUint32(buf, uint32(n))
		if _, err := vm.Write(buf[:link.LengthSize+n]); err != nil {
			break
		}
	}
	vm.Close()
	<-done
}

// requireIsolated refuses to go on unless this namespace has no default
// route: nothing the bench sends can leave the machine.
func requireIsolated() error {
	for _, fam := range []string{"-4", "-6"} {
		out, err := exec.Command("ip", fam, "route", "show", "default").CombinedOutput()
		if err != nil || strings.TrimSpace(string(out)) != "" {
			return fmt.Errorf("refusing to run: namespace has a default route (%s) or ip failed: %v", out, err)
		}
	}
	return nil
}

func run(args ...string) error {
	if out, err := exec.Command(args[0], args[1:]...).CombinedOutput(); err != nil {
		return fmt.Errorf("%s: %v: %s", strings.Join(args, " "), err, strings.TrimSpace(string(out)))
	}
	return nil
}
