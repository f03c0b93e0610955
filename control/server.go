package control

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/yamux"

	"github.com/torkbot/sandbox/control/wire"
)

// Handler is what the guest implements to serve operations. The Server
// calls it from one goroutine per operation, concurrently.
type Handler interface {
	// Start starts cmd in a new session and process group, with stdin on
	// /dev/null and stdout and stderr on pipes. cmd.Env is the complete
	// environment. An error means the command could not start; the host
	// then sees exit code 127 and `sandbox: cannot start "NAME": ERROR` on
	// stderr, so the error should say why in a few words, e.g.
	// "executable file not found in $PATH".
	Start(cmd Command) (Process, error)

	// Shutdown stops every process of the guest and syncs its filesystems.
	// Once it returns nil the Server answers the host, waits for the host
	// to close the stream, and Serve returns nil: powering off is the
	// caller's. It may be called more than once.
	Shutdown(ctx context.Context) error
}

// Process is a command started by Handler.Start. The Server owns it: it
// reads Stdout and Stderr and closes them, calls Wait once, and calls Kill
// when the host cancels.
type Process interface {
	// Pid is the process id, which is also its process group id.
	Pid() int
	// Stdout and Stderr are the read ends of the output pipes, as made by
	// os.Pipe: the Server relies on their read deadlines.
	Stdout() *os.File
	Stderr() *os.File
	// Wait blocks until the process has exited and returns its exit
	// status, or 128+N and N when signal N killed it (signal is 0
	// otherwise).
	Wait() (exitCode, signal int)
	// Kill sends SIGKILL to the process group. It may be called at any
	// time, concurrently with Wait, and more than once.
	Kill()
}

// Timing of the guest side, as specified in PROTOCOL.md.
const (
	// outputGrace is how long a pipe may stay empty after the command has
	// exited before the guest stops reading it: background processes that
	// outlive the command may hold it open for ever.
	outputGrace = 500 * time.Millisecond
	// maxOutputAfterExit bounds what is forwarded from each pipe after the
	// command has exited. It is at least a pipe's capacity, so all the
	// command wrote is delivered.
	maxOutputAfterExit = 1 << 20
	// shutdownAckTimeout bounds the wait for the host to close a shutdown
	// stream after the reply.
	shutdownAckTimeout = 2 * time.Second
)

// Server is the guest side of the control protocol.
type Server struct {
	// Handler serves the operations. Required.
	Handler Handler
	// Env is the environment every command starts from; each request's
	// variables are merged over it. sandbox-init passes its own, so that
	// commands see init's environment plus the call's, as in 0.6.0.
	Env map[string]string
	// KernelRelease and Boot are reported in the hello reply.
	KernelRelease string
	Boot          []BootEvent
	// Prepare, if set, does the host's Setup before the hello is answered;
	// its error is the guest's answer instead, and the guest stays not
	// ready. Without it the guest does not announce CapabilityTrustAnchors.
	Prepare func(ctx context.Context, s Setup) error
	// Log, if set, receives diagnostics that cannot reach the host:
	// yamux's own and failed writes of replies.
	Log io.Writer
}

// Serve serves the control protocol on conn, the guest end of the channel,
// until the session ends (it returns the reason), ctx is done (ctx's error),
// or a shutdown request has been answered (nil). It closes conn before
// returning. Operations still in flight then have their streams broken:
// their processes are killed and they finish in the background, which
// Serve does not wait for so that a process stuck in the kernel cannot keep
// the guest from powering off.
func (s *Server) Serve(ctx context.Context, conn io.ReadWriteCloser) error {
	session, err := yamux.Server(conn, yamuxConfig(s.Log))
	if err != nil {
		conn.Close()
		return fmt.Errorf("control: start session: %w", err)
	}
	defer session.Close()

	acceptCtx, stopAccepting := context.WithCancel(ctx)
	defer stopAccepting()
	state := &serverSession{srv: s, stopAccepting: stopAccepting}
	for {
		stream, err := session.AcceptStreamWithContext(acceptCtx)
		if err != nil {
			switch {
			case state.shutDown.Load():
				return nil
			case ctx.Err() != nil:
				return ctx.Err()
			}
			return fmt.Errorf("control: session ended: %w", err)
		}
		go state.serve(ctx, stream)
	}
}

// serverSession is the state of one Serve call.
type serverSession struct {
	srv           *Server
	stopAccepting context.CancelFunc
	// ready is set once a hello with our version has been answered.
	ready atomic.Bool
	// shutDown is set once a shutdown request has been answered.
	shutDown atomic.Bool
}

// capabilities are the operations this server announces.
var capabilities = []string{"exec", "shutdown"}

func (st *serverSession) serve(ctx context.Context, stream *yamux.Stream) {
	defer stream.Close()
	w := &messageWriter{stream: stream, log: st.srv.Log}
	m, err := wire.ReadHostMessage(stream)
	if err != nil {
		if !errors.Is(err, io.EOF) {
			w.write(&wire.Error{Message: errorMessage(err)})
		}
		return
	}
	if _, isHello := m.(*wire.Hello); !isHello && !st.ready.Load() {
		w.write(&wire.Error{Message: fmt.Sprintf("%v before a successful hello", m.Type())})
		return
	}
	switch m := m.(type) {
	case *wire.Hello:
		st.hello(ctx, w, m)
	case *wire.Exec:
		st.exec(w, m)
	case *wire.Shutdown:
		st.shutdown(ctx, w)
	}
}

func (st *serverSession) hello(ctx context.Context, w *messageWriter, m *wire.Hello) {
	caps := capabilities
	if st.srv.Prepare != nil {
		caps = append(slices.Clip(caps), CapabilityTrustAnchors)
	}
	reply := &wire.HelloReply{
		Version:       wire.Version,
		Capabilities:  caps,
		KernelRelease: st.srv.KernelRelease,
		Boot:          []wire.BootEvent{},
	}
	for _, e := range st.srv.Boot {
		reply.Boot = append(reply.Boot, wire.BootEvent{Name: e.Name, SinceBootNs: int64(e.At)})
	}
	// On a mismatch the guest still answers with its version so that the
	// host can name both; it then refuses every operation.
	if m.Version == wire.Version {
		if st.srv.Prepare != nil {
			if err := st.srv.Prepare(ctx, Setup{TrustAnchors: m.TrustAnchors}); err != nil {
				w.write(&wire.Error{Message: errorMessage(err)})
				return
			}
		}
		st.ready.Store(true)
	}
	w.write(reply)
}

func (st *serverSession) exec(w *messageWriter, req *wire.Exec) {
	cmd := Command{Name: req.Command, Args: req.Args, Dir: req.Cwd, Env: mergeEnv(st.srv.Env, req.Env), SignalNote: req.SignalNote}
	proc, err := st.srv.Handler.Start(cmd)
	if err != nil {
		reason := fmt.Sprintf("sandbox: cannot start %q: %v\n", cmd.Name, err)
		if len(reason) > wire.MaxChunkPayload {
			reason = reason[:wire.MaxChunkPayload]
		}
		if w.write(&wire.Stderr{Data: []byte(reason)}) {
			w.write(&wire.Exit{ExitCode: 127})
		}
		return
	}
	pipes := []*os.File{proc.Stdout(), proc.Stderr()}
	defer closeAll(pipes)

	// canceled is closed when the command's output can no longer be
	// delivered: the host closed or reset the stream (it sends nothing
	// after its request, so any read result means that), the session died,
	// or a write failed.
	canceled := make(chan struct{})
	var cancelOnce sync.Once
	cancel := func() { cancelOnce.Do(func() { close(canceled) }) }
	go func() {
		var b [1]byte
		w.stream.Read(b[:])
		cancel()
	}()

	w.write(&wire.Started{Pid: proc.Pid()})
	exited := make(chan struct{})
	var pumps sync.WaitGroup
	stderrLast := -1 // the last byte forwarded on stderr (-1: none), read after pumps.Wait
	pumps.Go(func() { pump(pipes[0], w, Stdout, exited, cancel, nil) })
	pumps.Go(func() { pump(pipes[1], w, Stderr, exited, cancel, &stderrLast) })
	pumpsDone := make(chan struct{})
	go func() {
		pumps.Wait()
		close(pumpsDone)
	}()
	type status struct{ code, signal int }
	exitStatus := make(chan status, 1)
	go func() {
		code, signal := proc.Wait()
		exitStatus <- status{code, signal}
	}()

	select {
	case st := <-exitStatus:
		close(exited)
		for _, p := range pipes {
			p.SetReadDeadline(time.Now().Add(outputGrace))
		}
		select {
		case <-pumpsDone:
			if req.SignalNote && st.signal != 0 {
				note := fmt.Sprintf("killed by signal %d\n", st.signal)
				if stderrLast >= 0 && stderrLast != '\n' {
					note = "\n" + note
				}
				if !w.write(&wire.Stderr{Data: []byte(note)}) {
					return
				}
			}
			w.write(&wire.Exit{ExitCode: st.code})
		case <-canceled:
			closeAll(pipes)
			<-pumpsDone
		}
	case <-canceled:
		proc.Kill()
		// Nobody reads what is left: fail blocked and later writes at once.
		w.stream.SetWriteDeadline(time.Now())
		closeAll(pipes)
		<-pumpsDone
	}
}

// pump forwards one output pipe as chunks until EOF, until the pipe is
// closed, or until a write fails (then it calls cancel). Once exited is
// closed the pipe holds what the command left plus whatever background
// processes that outlive it write: pump then stops when the pipe stays
// empty for outputGrace or after maxOutputAfterExit more bytes. last, if
// set, receives the last byte forwarded.
func pump(pipe *os.File, w *messageWriter, fd FD, exited <-chan struct{}, cancel func(), last *int) {
	buf := make([]byte, wire.MaxChunkPayload)
	budget := -1 // bytes still forwarded after exit; -1 until exit
	for {
		select {
		case <-exited:
			if budget < 0 {
				budget = maxOutputAfterExit
			}
			pipe.SetReadDeadline(time.Now().Add(outputGrace))
		default:
		}
		n, err := pipe.Read(buf)
		if n > 0 {
			var m wire.Message = &wire.Stdout{Data: buf[:n]}
			if fd == Stderr {
				m = &wire.Stderr{Data: buf[:n]}
			}
			if !w.write(m) {
				cancel()
				return
			}
			if last != nil {
				*last = int(buf[n-1])
			}
		}
		if err != nil {
			return
		}
		if budget >= 0 {
			if budget -= n; budget <= 0 {
				return
			}
		}
	}
}

func closeAll(files []*os.File) {
	for _, f := range files {
		f.Close()
	}
}

func (st *serverSession) shutdown(ctx context.Context, w *messageWriter) {
	if err := st.srv.Handler.Shutdown(ctx); err != nil {
		w.write(&wire.Error{Message: errorMessage(err)})
		return
	}
	if !w.write(&wire.ShutdownReply{}) {
		return
	}
	// The host closes the stream once it has read the reply; waiting for
	// that makes sure powering off cannot cut the reply off in the channel.
	w.stream.SetReadDeadline(time.Now().Add(shutdownAckTimeout))
	io.Copy(io.Discard, w.stream)
	st.shutDown.Store(true)
	st.stopAccepting()
}

// messageWriter serialises the messages written to one stream.
type messageWriter struct {
	stream *yamux.Stream
	log    io.Writer

	mu sync.Mutex
}

// write writes m and reports whether it succeeded; failures are logged.
func (w *messageWriter) write(m wire.Message) bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	if err := wire.WriteMessage(w.stream, m); err != nil {
		if w.log != nil {
			fmt.Fprintf(w.log, "control: stream %d: write %v: %v\n", w.stream.StreamID(), m.Type(), err)
		}
		return false
	}
	return true
}

// errorMessage renders err for an error reply, within the protocol's bound.
func errorMessage(err error) string {
	msg := err.Error()
	if len(msg) > wire.MaxErrorMessage {
		msg = msg[:wire.MaxErrorMessage]
	}
	return msg
}
