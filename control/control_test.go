package control_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/yamux"

	"github.com/torkbot/sandbox/control"
	"github.com/torkbot/sandbox/control/controltest"
	"github.com/torkbot/sandbox/control/wire"
	"github.com/torkbot/sandbox/internal/testutil"
)

type guest struct {
	handler *controltest.Handler
	conn    net.Conn   // the guest end, to simulate the VMM dying
	served  chan error // Serve's result
}

// baseEnv stands for init's environment, what sandbox-init passes as
// Server.Env.
var baseEnv = map[string]string{"PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "HOME": "/", "TERM": "linux"}

var bootTimeline = []control.BootEvent{{Name: "init", At: 800 * time.Millisecond}, {Name: "ready", At: time.Second}}

// start connects a Client to a Server running controltest.Handler.
func start(t *testing.T) (*control.Client, *guest) {
	t.Helper()
	hostConn, guestConn := testutil.ConnPair(t)
	g := &guest{handler: &controltest.Handler{}, conn: guestConn, served: make(chan error, 1)}
	srv := &control.Server{Handler: g.handler, Env: baseEnv, KernelRelease: "6.1.0-test", Boot: bootTimeline}
	go func() { g.served <- srv.Serve(context.Background(), guestConn) }()
	c, err := control.NewClient(hostConn)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c, g
}

// startReady is start followed by a successful handshake.
func startReady(t *testing.T) (*control.Client, *guest) {
	t.Helper()
	c, g := start(t)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if _, err := c.Handshake(ctx, control.Setup{}); err != nil {
		t.Fatalf("Handshake: %v", err)
	}
	return c, g
}

type chunk struct {
	fd   control.FD
	data string
}

// recorder is an OutputSink that keeps every chunk.
type recorder struct {
	mu     sync.Mutex
	chunks []chunk
}

func (r *recorder) sink(fd control.FD, p []byte) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.chunks = append(r.chunks, chunk{fd, string(p)})
}

func (r *recorder) output(fd control.FD) string {
	r.mu.Lock()
	defer r.mu.Unlock()
	var b strings.Builder
	for _, c := range r.chunks {
		if c.fd == fd {
			b.WriteString(c.data)
		}
	}
	return b.String()
}

func sh(script string) control.Command {
	return control.Command{Name: "/bin/sh", Args: []string{"-c", script}}
}

func TestHandshake(t *testing.T) {
	c, _ := start(t)
	info, err := c.Handshake(context.Background(), control.Setup{})
	if err != nil {
		t.Fatal(err)
	}
	if info.ProtocolVersion != wire.Version || info.KernelRelease != "6.1.0-test" {
		t.Errorf("info = %+v", info)
	}
	if len(info.Boot) != 2 || info.Boot[1] != bootTimeline[1] {
		t.Errorf("boot = %+v, want %+v", info.Boot, bootTimeline)
	}
	if !strings.Contains(strings.Join(info.Capabilities, ","), "exec") {
		t.Errorf("capabilities = %q", info.Capabilities)
	}
	if _, err := c.Handshake(context.Background(), control.Setup{}); err == nil {
		t.Error("second Handshake succeeded")
	}
}

// startWith is start with a Server whose Prepare is prepare.
func startWith(t *testing.T, prepare func(context.Context, control.Setup) error) *control.Client {
	t.Helper()
	hostConn, guestConn := testutil.ConnPair(t)
	srv := &control.Server{Handler: &controltest.Handler{}, KernelRelease: "6.1.0-test", Prepare: prepare}
	go srv.Serve(context.Background(), guestConn)
	c, err := control.NewClient(hostConn)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func TestHandshakeSetup(t *testing.T) {
	const anchor = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n"
	t.Run("installed before ready", func(t *testing.T) {
		var got []string
		c := startWith(t, func(_ context.Context, s control.Setup) error {
			got = s.TrustAnchors
			return nil
		})
		info, err := c.Handshake(context.Background(), control.Setup{TrustAnchors: []string{anchor}})
		if err != nil {
			t.Fatal(err)
		}
		if len(got) != 1 || got[0] != anchor {
			t.Errorf("Prepare got %q", got)
		}
		if !slices.Contains(info.Capabilities, control.CapabilityTrustAnchors) {
			t.Errorf("capabilities = %q", info.Capabilities)
		}
		if code, err := c.Run(context.Background(), sh("exit 3"), nil); code != 3 || err != nil {
			t.Errorf("Run after setup = %d, %v", code, err)
		}
	})
	t.Run("failure is the guest's answer", func(t *testing.T) {
		c := startWith(t, func(context.Context, control.Setup) error {
			return errors.New("image has no CA bundle")
		})
		_, err := c.Handshake(context.Background(), control.Setup{TrustAnchors: []string{anchor}})
		var ge *control.GuestError
		if !errors.As(err, &ge) || !strings.Contains(err.Error(), "image has no CA bundle") {
			t.Fatalf("Handshake = %v, want the guest's reason", err)
		}
	})
	t.Run("guest that cannot install fails closed", func(t *testing.T) {
		c, _ := start(t) // no Prepare
		_, err := c.Handshake(context.Background(), control.Setup{TrustAnchors: []string{anchor}})
		if err == nil || !strings.Contains(err.Error(), "cannot install trust anchors") {
			t.Fatalf("Handshake = %v", err)
		}
	})
}

func TestRun(t *testing.T) {
	c, _ := startReady(t)
	tests := []struct {
		name       string
		cmd        control.Command
		wantCode   int
		wantStdout string
		wantStderr string // substring
	}{
		{name: "success", cmd: sh("echo hi"), wantCode: 0, wantStdout: "hi\n"},
		{name: "exit status", cmd: sh("exit 3"), wantCode: 3},
		{name: "signal", cmd: sh("kill -9 $$"), wantCode: 128 + 9},
		{name: "signal note", cmd: control.Command{Name: "/bin/sh", Args: []string{"-c", "printf oops >&2; kill -15 $$"}, SignalNote: true},
			wantCode: 128 + 15, wantStderr: "oops\nkilled by signal 15\n"},
		{name: "signal note after a newline", cmd: control.Command{Name: "/bin/sh", Args: []string{"-c", "kill -9 $$"}, SignalNote: true},
			wantCode: 128 + 9, wantStderr: "killed by signal 9\n"},
		{name: "no signal note on exit 137", cmd: control.Command{Name: "/bin/sh", Args: []string{"-c", "exit 137"}, SignalNote: true},
			wantCode: 137},
		{name: "args", cmd: control.Command{Name: "echo", Args: []string{"a b", "c"}}, wantStdout: "a b c\n"},
		{name: "base env", cmd: sh(`echo "$HOME $TERM $PATH"`), wantStdout: "/ linux /usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin\n"},
		{name: "env merged", cmd: control.Command{Name: "/bin/sh", Args: []string{"-c", `echo "$HOME $FOO"`}, Env: map[string]string{"FOO": "bar", "HOME": "/home/x"}}, wantStdout: "/home/x bar\n"},
		{name: "default cwd", cmd: sh("pwd"), wantStdout: "/\n"},
		{name: "cwd", cmd: control.Command{Name: "pwd", Dir: "/tmp"}, wantStdout: "/tmp\n"},
		{name: "stdin is /dev/null", cmd: sh("cat; echo done"), wantStdout: "done\n"},
		{name: "not found", cmd: control.Command{Name: "no-such-command"}, wantCode: 127,
			wantStderr: `sandbox: cannot start "no-such-command": executable file not found in $PATH`},
		{name: "not executable", cmd: control.Command{Name: "/etc/passwd"}, wantCode: 127,
			wantStderr: `sandbox: cannot start "/etc/passwd": permission denied`},
		{name: "bad cwd", cmd: control.Command{Name: "/bin/true", Dir: "/no/such/dir"}, wantCode: 127,
			wantStderr: `sandbox: cannot start "/bin/true": working directory`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var out recorder
			code, err := c.Run(context.Background(), tt.cmd, out.sink)
			if err != nil {
				t.Fatalf("Run: %v", err)
			}
			if code != tt.wantCode {
				t.Errorf("exit code = %d, want %d (stderr %q)", code, tt.wantCode, out.output(control.Stderr))
			}
			if got := out.output(control.Stdout); got != tt.wantStdout {
				t.Errorf("stdout = %q, want %q", got, tt.wantStdout)
			}
			if got := out.output(control.Stderr); !strings.Contains(got, tt.wantStderr) || (tt.wantStderr == "" && got != "") {
				t.Errorf("stderr = %q, want it to contain %q", got, tt.wantStderr)
			}
		})
	}
}

func TestRunInvalidCommand(t *testing.T) {
	c, _ := startReady(t)
	for _, cmd := range []control.Command{
		{},
		{Name: "echo", Args: []string{"a\x00b"}},
		{Name: "echo", Env: map[string]string{"A=B": "c"}},
	} {
		if _, err := c.Run(context.Background(), cmd, nil); err == nil {
			t.Errorf("Run(%+v) succeeded", cmd)
		}
	}
	// The session is still usable.
	if code, err := c.Run(context.Background(), sh("exit 0"), nil); code != 0 || err != nil {
		t.Errorf("Run after invalid commands = %d, %v", code, err)
	}
}

// TestRunStarted: Command.Started runs once the guest reports the command
// running, before its output, and never for a command that cannot start.
func TestRunStarted(t *testing.T) {
	c, _ := startReady(t)
	var events []string
	cmd := sh("echo out")
	cmd.Started = func() { events = append(events, "started") }
	if code, err := c.Run(context.Background(), cmd, func(fd control.FD, b []byte) { events = append(events, string(b)) }); code != 0 || err != nil {
		t.Fatalf("Run = %d, %v", code, err)
	}
	if !slices.Equal(events, []string{"started", "out\n"}) {
		t.Errorf("events %q, want started then the output", events)
	}
	events = nil
	cmd = control.Command{Name: "no-such-command", Started: func() { events = append(events, "started") }}
	if code, err := c.Run(context.Background(), cmd, nil); code != 127 || err != nil || len(events) != 0 {
		t.Errorf("Run of a missing command = %d, %v, events %q: want 127 and no start", code, err, events)
	}
}

func TestRunOutputOrder(t *testing.T) {
	c, _ := startReady(t)
	var out recorder
	code, err := c.Run(context.Background(), sh("printf a; sleep 0.2; printf b >&2; sleep 0.2; printf c"), out.sink)
	if err != nil || code != 0 {
		t.Fatalf("Run = %d, %v", code, err)
	}
	want := []chunk{{control.Stdout, "a"}, {control.Stderr, "b"}, {control.Stdout, "c"}}
	if fmt.Sprint(out.chunks) != fmt.Sprint(want) {
		t.Errorf("chunks = %v, want %v", out.chunks, want)
	}
}

func TestRunConcurrent(t *testing.T) {
	c, _ := startReady(t)
	const n = 20
	start := time.Now()
	var wg sync.WaitGroup
	errs := make(chan error, n)
	for i := range n {
		wg.Go(func() {
			var out recorder
			code, err := c.Run(context.Background(), sh(fmt.Sprintf("sleep 0.5; echo %d; exit %d", i, i)), out.sink)
			switch {
			case err != nil:
				errs <- err
			case code != i || out.output(control.Stdout) != fmt.Sprintf("%d\n", i):
				errs <- fmt.Errorf("command %d: exit %d, stdout %q", i, code, out.output(control.Stdout))
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if elapsed := time.Since(start); elapsed > 5*time.Second {
		t.Errorf("%d concurrent 0.5 s commands took %v: not concurrent", n, elapsed)
	}
}

// waitGone waits until no live process is left in process group pgid.
// Zombies count as gone: reaping orphans is the business of whatever init
// the tests run under.
func waitGone(t *testing.T, pgid int) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for liveInGroup(pgid) {
		if time.Now().After(deadline) {
			t.Fatalf("process group %d still alive", pgid)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func liveInGroup(pgid int) bool {
	stats, _ := filepath.Glob("/proc/[0-9]*/stat")
	for _, path := range stats {
		b, err := os.ReadFile(path)
		if err != nil {
			continue
		}
		// Fields after the parenthesised command name: state ppid pgrp ...
		i := bytes.LastIndexByte(b, ')')
		if i < 0 {
			continue
		}
		f := strings.Fields(string(b[i+1:]))
		if len(f) > 2 && f[0] != "Z" && f[2] == strconv.Itoa(pgid) {
			return true
		}
	}
	return false
}

func TestRunCancelKillsProcessGroup(t *testing.T) {
	c, g := startReady(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	ready := make(chan struct{})
	var once sync.Once
	result := make(chan error, 1)
	go func() {
		// A background child in the same group must die too.
		_, err := c.Run(ctx, sh("sleep 100 & echo ready; sleep 100"), func(control.FD, []byte) {
			once.Do(func() { close(ready) })
		})
		result <- err
	}()
	select {
	case <-ready:
	case <-time.After(5 * time.Second):
		t.Fatal("command did not start")
	}
	cancel()
	select {
	case err := <-result:
		if !errors.Is(err, context.Canceled) {
			t.Errorf("Run error = %v, want context.Canceled", err)
		}
	case <-time.After(2 * time.Second):
		t.Fatal("Run did not return after cancel")
	}
	waitGone(t, g.handler.Pids()[0])

	// The session is still usable.
	if code, err := c.Run(context.Background(), sh("exit 5"), nil); code != 5 || err != nil {
		t.Errorf("Run after cancel = %d, %v", code, err)
	}
	if _, err := c.Run(ctx, sh("exit 0"), nil); !errors.Is(err, context.Canceled) {
		t.Errorf("Run with a cancelled context: %v", err)
	}
}

func TestShutdown(t *testing.T) {
	c, g := startReady(t)
	running := make(chan int, 1)
	go func() {
		code, _ := c.Run(context.Background(), sh("sleep 100"), nil)
		running <- code
	}()
	// Let the command start before shutting down.
	for len(g.handler.Pids()) == 0 {
		time.Sleep(5 * time.Millisecond)
	}
	if err := c.Shutdown(context.Background()); err != nil {
		t.Fatalf("Shutdown: %v", err)
	}
	if g.handler.Shutdowns() != 1 {
		t.Errorf("Handler.Shutdown called %d times", g.handler.Shutdowns())
	}
	select {
	case err := <-g.served:
		if err != nil {
			t.Errorf("Serve = %v, want nil after shutdown", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Serve did not return after shutdown")
	}
	select {
	case <-c.Done():
	case <-time.After(2 * time.Second):
		t.Fatal("client not done after the guest ended the session")
	}
	if !errors.Is(c.Err(), control.ErrSessionLost) {
		t.Errorf("Err = %v, want ErrSessionLost", c.Err())
	}
	// The command was killed by the shutdown; its result is either its exit
	// (if that crossed before the session ended) or the session loss.
	if code := <-running; code != 137 && code != -1 {
		t.Errorf("running command ended with %d", code)
	}
}

func TestSessionLost(t *testing.T) {
	c, g := startReady(t)
	pending := make(chan error, 1)
	go func() {
		_, err := c.Run(context.Background(), sh("sleep 100"), nil)
		pending <- err
	}()
	for len(g.handler.Pids()) == 0 {
		time.Sleep(5 * time.Millisecond)
	}
	g.conn.Close() // the VMM died

	select {
	case err := <-pending:
		if !errors.Is(err, control.ErrSessionLost) {
			t.Errorf("pending Run error = %v, want ErrSessionLost", err)
		}
	case <-time.After(2 * time.Second):
		t.Fatal("pending Run did not fail")
	}
	begin := time.Now()
	if _, err := c.Run(context.Background(), sh("true"), nil); !errors.Is(err, control.ErrSessionLost) {
		t.Errorf("later Run error = %v, want ErrSessionLost", err)
	}
	if err := c.Shutdown(context.Background()); !errors.Is(err, control.ErrSessionLost) {
		t.Errorf("later Shutdown error = %v, want ErrSessionLost", err)
	}
	if d := time.Since(begin); d > time.Second {
		t.Errorf("later calls took %v", d)
	}
	<-c.Done()
	// The guest side kills what the lost session was running.
	waitGone(t, g.handler.Pids()[0])
	if err := <-g.served; err == nil {
		t.Error("Serve returned nil after losing the session")
	}
}

func TestClose(t *testing.T) {
	c, _ := start(t)
	if _, err := c.Run(context.Background(), sh("true"), nil); !errors.Is(err, control.ErrNoHandshake) {
		t.Errorf("Run before Handshake: %v, want ErrNoHandshake", err)
	}
	if _, err := c.Handshake(context.Background(), control.Setup{}); err != nil {
		t.Fatal(err)
	}
	pending := make(chan error, 1)
	go func() {
		_, err := c.Run(context.Background(), sh("sleep 100"), nil)
		pending <- err
	}()
	time.Sleep(100 * time.Millisecond)
	c.Close()
	if err := c.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
	if err := <-pending; !errors.Is(err, control.ErrClosed) {
		t.Errorf("pending Run: %v, want ErrClosed", err)
	}
	if _, err := c.Run(context.Background(), sh("true"), nil); !errors.Is(err, control.ErrClosed) {
		t.Errorf("Run after Close: %v, want ErrClosed", err)
	}
	if !errors.Is(c.Err(), control.ErrClosed) {
		t.Errorf("Err = %v", c.Err())
	}
}

func TestHandshakeTimeout(t *testing.T) {
	hostConn, guestConn := testutil.ConnPair(t)
	defer guestConn.Close() // a guest that never boots
	c, err := control.NewClient(hostConn)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	if _, err := c.Handshake(ctx, control.Setup{}); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("Handshake = %v, want DeadlineExceeded", err)
	}
	if !errors.Is(c.Err(), control.ErrClosed) {
		t.Errorf("failed Handshake left the client open: Err = %v", c.Err())
	}
}

// fakeGuest serves a yamux session by hand, to play a guest that does
// not follow the protocol. Each accepted stream gets its first host message
// decoded and is handed to reply.
func fakeGuest(t testing.TB, conn net.Conn, reply func(m wire.Message, stream net.Conn)) {
	session, err := yamux.Server(conn, nil)
	if err != nil {
		t.Fatal(err)
	}
	go func() {
		defer session.Close()
		for {
			stream, err := session.Accept()
			if err != nil {
				return
			}
			go func() {
				defer stream.Close()
				m, err := wire.ReadHostMessage(stream)
				if err != nil {
					return
				}
				reply(m, stream)
			}()
		}
	}()
}

func TestVersionMismatch(t *testing.T) {
	t.Run("guest speaks another version", func(t *testing.T) {
		hostConn, guestConn := testutil.ConnPair(t)
		fakeGuest(t, guestConn, func(m wire.Message, stream net.Conn) {
			wire.WriteMessage(stream, &wire.HelloReply{Version: 2})
		})
		c, _ := control.NewClient(hostConn)
		_, err := c.Handshake(context.Background(), control.Setup{})
		var ve *control.VersionError
		if !errors.Is(err, control.ErrVersionMismatch) || !errors.As(err, &ve) || ve.Host != 1 || ve.Guest != 2 {
			t.Fatalf("Handshake = %v, want a VersionError host 1 guest 2", err)
		}
		if !strings.Contains(err.Error(), "host speaks 1, guest speaks 2") {
			t.Errorf("error text %q does not name both versions", err)
		}
	})
	t.Run("host speaks another version", func(t *testing.T) {
		hostConn, guestConn := testutil.ConnPair(t)
		srv := &control.Server{Handler: &controltest.Handler{}}
		go srv.Serve(context.Background(), guestConn)
		session, err := yamux.Client(hostConn, nil)
		if err != nil {
			t.Fatal(err)
		}
		defer session.Close()
		roundTrip := func(req wire.Message) wire.Message {
			stream, err := session.Open()
			if err != nil {
				t.Fatal(err)
			}
			defer stream.Close()
			if err := wire.WriteMessage(stream, req); err != nil {
				t.Fatal(err)
			}
			m, err := wire.ReadGuestMessage(stream)
			if err != nil {
				t.Fatal(err)
			}
			return m
		}
		if m, ok := roundTrip(&wire.Hello{Version: 99}).(*wire.HelloReply); !ok || m.Version != wire.Version {
			t.Fatalf("hello reply = %#v, want the guest's version", m)
		}
		if m, ok := roundTrip(&wire.Exec{Command: "/bin/true"}).(*wire.Error); !ok || !strings.Contains(m.Message, "hello") {
			t.Errorf("exec after a mismatched hello = %#v, want an error", m)
		}
	})
}

func TestGuestProtocolViolation(t *testing.T) {
	tests := []struct {
		name  string
		reply func(stream net.Conn)
	}{
		{"stream ends before exit", func(stream net.Conn) {
			wire.WriteMessage(stream, &wire.Started{Pid: 1})
		}},
		{"garbage", func(stream net.Conn) { stream.Write([]byte("\xff\x00\x00\x00\x01x")) }},
		{"oversized chunk", func(stream net.Conn) { stream.Write([]byte("\x43\x7f\xff\xff\xff")) }},
		{"started twice", func(stream net.Conn) {
			wire.WriteMessage(stream, &wire.Started{Pid: 1})
			wire.WriteMessage(stream, &wire.Started{Pid: 1})
		}},
		{"hello reply on an exec stream", func(stream net.Conn) {
			wire.WriteMessage(stream, &wire.HelloReply{Version: 1})
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			hostConn, guestConn := testutil.ConnPair(t)
			fakeGuest(t, guestConn, func(m wire.Message, stream net.Conn) {
				if _, ok := m.(*wire.Hello); ok {
					wire.WriteMessage(stream, &wire.HelloReply{Version: wire.Version})
					return
				}
				tt.reply(stream)
			})
			c, _ := control.NewClient(hostConn)
			defer c.Close()
			if _, err := c.Handshake(context.Background(), control.Setup{}); err != nil {
				t.Fatal(err)
			}
			_, err := c.Run(context.Background(), sh("true"), nil)
			if !errors.Is(err, control.ErrProtocol) {
				t.Errorf("Run = %v, want ErrProtocol", err)
			}
			if c.Err() != nil {
				t.Errorf("one bad stream ended the client: %v", c.Err())
			}
		})
	}
}

func TestLargeOutputFlowControl(t *testing.T) {
	c, _ := startReady(t)
	const size = 8 << 20
	// The sink blocks until released: the guest must be held back by flow
	// control, and other commands must not be.
	release := make(chan struct{})
	var got bytes.Buffer
	var blocked sync.Once
	done := make(chan error, 1)
	go func() {
		code, err := c.Run(context.Background(), sh(fmt.Sprintf("yes 0123456789abcde | head -c %d; echo end >&2", size)), func(fd control.FD, p []byte) {
			blocked.Do(func() { <-release })
			if fd == control.Stdout {
				got.Write(p)
			}
		})
		if err == nil && code != 0 {
			err = fmt.Errorf("exit code %d", code)
		}
		done <- err
	}()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if code, err := c.Run(ctx, sh("echo other"), nil); code != 0 || err != nil {
		t.Fatalf("a second command behind a blocked one: %d, %v", code, err)
	}
	close(release)
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	want := bytes.Repeat([]byte("0123456789abcde\n"), size/16)
	if !bytes.Equal(got.Bytes(), want) {
		t.Errorf("got %d bytes of stdout, want %d (content equal: %v)", got.Len(), len(want), bytes.Equal(got.Bytes(), want))
	}
}

func TestOutputOfSurvivorsIsNotWaitedFor(t *testing.T) {
	c, _ := startReady(t)
	var out recorder
	begin := time.Now()
	// The background sleep keeps stdout open after the shell exits.
	code, err := c.Run(context.Background(), sh("echo before; sleep 30 &"), out.sink)
	if err != nil || code != 0 {
		t.Fatalf("Run = %d, %v", code, err)
	}
	if d := time.Since(begin); d > 5*time.Second {
		t.Errorf("Run took %v: it waited for a background process", d)
	}
	if got := out.output(control.Stdout); got != "before\n" {
		t.Errorf("stdout = %q", got)
	}
}

// FuzzClientRun plays a hostile guest that answers an exec request with
// arbitrary bytes: Run must return, never panic or hang.
func FuzzClientRun(f *testing.F) {
	seed := func(ms ...wire.Message) []byte {
		var b bytes.Buffer
		for _, m := range ms {
			wire.WriteMessage(&b, m)
		}
		return b.Bytes()
	}
	f.Add(seed(&wire.Started{Pid: 7}, &wire.Stdout{Data: []byte("hi\n")}, &wire.Exit{ExitCode: 0}))
	f.Add(seed(&wire.Stderr{Data: []byte("sandbox: cannot start\n")}, &wire.Exit{ExitCode: 127}))
	f.Add(seed(&wire.Error{Message: "no"}))
	f.Add([]byte("\x45\x00\x00\x00\x0e{\"exitCode\":3}"))
	f.Add([]byte("\x43\xff\xff\xff\xff"))
	f.Fuzz(func(t *testing.T, reply []byte) {
		hostConn, guestConn := testutil.ConnPair(t)
		fakeGuest(t, guestConn, func(m wire.Message, stream net.Conn) {
			if _, ok := m.(*wire.Hello); ok {
				wire.WriteMessage(stream, &wire.HelloReply{Version: wire.Version})
				return
			}
			stream.Write(reply)
		})
		c, _ := control.NewClient(hostConn)
		defer c.Close()
		if _, err := c.Handshake(context.Background(), control.Setup{}); err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		code, err := c.Run(ctx, sh("true"), func(control.FD, []byte) {})
		if errors.Is(err, context.DeadlineExceeded) {
			t.Fatal("Run hung")
		}
		if err == nil && (code < 0 || code > 255) {
			t.Fatalf("exit code %d", code)
		}
	})
}
