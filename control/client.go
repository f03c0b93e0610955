package control

import (
	"context"
	"errors"
	"fmt"
	"io"
	"slices"
	"sync"
	"time"

	"github.com/hashicorp/yamux"

	"github.com/torkbot/sandbox/control/wire"
)

// Client is the host side of the control protocol. See the package doc for
// its lifecycle. All methods are safe for concurrent use.
type Client struct {
	conn      io.ReadWriteCloser
	closeConn sync.Once

	mu sync.Mutex
	// session is set by Handshake; nil before.
	session *yamux.Session
	// guard filters what the guest sends to session; set with it.
	guard *guard
	// ready is set once the handshake has succeeded.
	ready bool
	// err is why the client ended; nil while it is usable.
	err error
	// done is closed when err is set.
	done chan struct{}
}

// NewClient returns a Client speaking over conn, the host end of the
// channel. The Client owns conn and closes it. It starts no goroutine and
// sends nothing: call Handshake.
func NewClient(conn io.ReadWriteCloser) (*Client, error) {
	if conn == nil {
		return nil, errors.New("control: nil channel")
	}
	return &Client{conn: conn, done: make(chan struct{})}, nil
}

// Handshake starts the session and exchanges hellos with the guest, which
// does setup before it answers. The host may call it as soon as the channel
// is connected: the guest answers once it has booted, so ctx bounds the
// boot. A guest speaking another protocol version gives a *VersionError; a
// guest that failed the setup, a *GuestError with its reason. Handshake may
// be called once; when it fails the Client is closed.
func (c *Client) Handshake(ctx context.Context, setup Setup) (GuestInfo, error) {
	c.mu.Lock()
	if c.err != nil {
		err := c.err
		c.mu.Unlock()
		return GuestInfo{}, err
	}
	if c.session != nil {
		c.mu.Unlock()
		return GuestInfo{}, errors.New("control: handshake already attempted")
	}
	c.guard = newGuard(c.conn)
	session, err := yamux.Client(c.guard, yamuxConfig(nil))
	if err != nil {
		c.mu.Unlock()
		c.Close()
		return GuestInfo{}, fmt.Errorf("control: start session: %w", err)
	}
	c.session = session
	c.mu.Unlock()
	go c.watch(session)

	info, err := c.hello(ctx, setup)
	if err != nil {
		c.Close()
		return GuestInfo{}, err
	}
	c.mu.Lock()
	c.ready = true
	c.mu.Unlock()
	return info, nil
}

func (c *Client) hello(ctx context.Context, setup Setup) (GuestInfo, error) {
	const op = "handshake"
	stream, err := c.openStream(op, false)
	if err != nil {
		return GuestInfo{}, err
	}
	defer stream.Close()
	defer cancelOnDone(ctx, stream)()

	if err := wire.WriteMessage(stream, &wire.Hello{Version: wire.Version, Capabilities: []string{}, TrustAnchors: setup.TrustAnchors}); err != nil {
		return GuestInfo{}, c.streamError(ctx, op, err)
	}
	m, err := wire.ReadGuestMessage(stream)
	if err != nil {
		return GuestInfo{}, c.streamError(ctx, op, err)
	}
	switch m := m.(type) {
	case *wire.HelloReply:
		if m.Version != wire.Version {
			return GuestInfo{}, &VersionError{Host: wire.Version, Guest: m.Version}
		}
		if len(setup.TrustAnchors) > 0 && !slices.Contains(m.Capabilities, CapabilityTrustAnchors) {
			// It answered without installing them: fail closed.
			return GuestInfo{}, &GuestError{Op: op, Message: "the guest cannot install trust anchors (its sandbox-init predates them)"}
		}
		info := GuestInfo{
			ProtocolVersion: m.Version,
			Capabilities:    m.Capabilities,
			KernelRelease:   m.KernelRelease,
		}
		for _, e := range m.Boot {
			info.Boot = append(info.Boot, BootEvent{Name: e.Name, At: time.Duration(e.SinceBootNs)})
		}
		return info, nil
	case *wire.Error:
		return GuestInfo{}, &GuestError{Op: op, Message: m.Message}
	default:
		return GuestInfo{}, fmt.Errorf("control: %s: %w: unexpected %v", op, ErrProtocol, m.Type())
	}
}

// Run runs cmd in the guest and returns its exit code: the exit status, 127
// when it could not start (the reason is on stderr), 128+N when signal N
// killed it. Output goes to sink as it is produced; a nil sink discards it.
// Cancelling ctx kills the command's process group in the guest and makes
// Run return ctx's error. On error the exit code is -1.
func (c *Client) Run(ctx context.Context, cmd Command, sink OutputSink) (int, error) {
	op := fmt.Sprintf("run %q", cmd.Name)
	if err := ctx.Err(); err != nil {
		return -1, fmt.Errorf("control: %s: %w", op, err)
	}
	if sink == nil {
		sink = func(FD, []byte) {}
	}
	stream, err := c.openStream(op, true)
	if err != nil {
		return -1, err
	}
	// Closing the stream before the exit message is how the host cancels:
	// the guest then kills the process group.
	defer stream.Close()
	defer cancelOnDone(ctx, stream)()

	req := &wire.Exec{Command: cmd.Name, Args: cmd.Args, Cwd: cmd.Dir, Env: cmd.Env, SignalNote: cmd.SignalNote}
	if err := wire.WriteMessage(stream, req); err != nil {
		return -1, c.streamError(ctx, op, err)
	}
	for first := true; ; first = false {
		m, err := wire.ReadGuestMessage(stream)
		if err != nil {
			return -1, c.streamError(ctx, op, err)
		}
		switch m := m.(type) {
		case *wire.Started:
			if !first {
				return -1, fmt.Errorf("control: %s: %w: started after other messages", op, ErrProtocol)
			}
			if cmd.Started != nil {
				cmd.Started()
			}
		case *wire.Stdout:
			sink(Stdout, m.Data)
		case *wire.Stderr:
			sink(Stderr, m.Data)
		case *wire.Exit:
			return m.ExitCode, nil
		case *wire.Error:
			return -1, &GuestError{Op: op, Message: m.Message}
		default:
			return -1, fmt.Errorf("control: %s: %w: unexpected %v", op, ErrProtocol, m.Type())
		}
	}
}

// Shutdown asks the guest to stop all its processes and sync its
// filesystems. When it returns nil the guest has done so and is powering
// off; the session then ends (Done) when the VMM exits.
func (c *Client) Shutdown(ctx context.Context) error {
	const op = "shutdown"
	stream, err := c.openStream(op, true)
	if err != nil {
		return err
	}
	// The guest powers off once it sees this close: it proves the reply
	// crossed the channel.
	defer stream.Close()
	defer cancelOnDone(ctx, stream)()

	if err := wire.WriteMessage(stream, &wire.Shutdown{}); err != nil {
		return c.streamError(ctx, op, err)
	}
	m, err := wire.ReadGuestMessage(stream)
	if err != nil {
		return c.streamError(ctx, op, err)
	}
	switch m := m.(type) {
	case *wire.ShutdownReply:
		return nil
	case *wire.Error:
		return &GuestError{Op: op, Message: m.Message}
	default:
		return fmt.Errorf("control: %s: %w: unexpected %v", op, ErrProtocol, m.Type())
	}
}

// Close ends the session and closes the channel. Pending calls fail with
// ErrClosed. It is idempotent.
func (c *Client) Close() error {
	c.end(ErrClosed)
	c.mu.Lock()
	session := c.session
	c.mu.Unlock()
	var err error
	c.closeConn.Do(func() {
		if session != nil {
			err = session.Close() // closes conn
		} else {
			err = c.conn.Close()
		}
	})
	return err
}

// Done is closed when the Client has ended: Close was called or the session
// with the guest was lost.
func (c *Client) Done() <-chan struct{} { return c.done }

// Err returns nil while the Client is usable, then why it ended: ErrClosed
// or ErrSessionLost.
func (c *Client) Err() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.err
}

// watch ends the client when the session dies on its own.
func (c *Client) watch(session *yamux.Session) {
	<-session.CloseChan()
	c.end(c.lost())
}

// lost is why the session died on its own: ErrSessionLost, and the rule
// the guest broke if it was ended for that.
func (c *Client) lost() error {
	if err := c.guard.brokenRule(); err != nil {
		return fmt.Errorf("%w: %w", ErrSessionLost, err)
	}
	return ErrSessionLost
}

// end records why the client ended; the first reason wins.
func (c *Client) end(reason error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.err == nil {
		c.err = reason
		close(c.done)
	}
}

func (c *Client) openStream(op string, needHandshake bool) (*yamux.Stream, error) {
	c.mu.Lock()
	session, ready, ended := c.session, c.ready, c.err
	c.mu.Unlock()
	// These are states of the whole client, which the sentinels say fully.
	switch {
	case ended != nil:
		return nil, ended
	case needHandshake && !ready:
		return nil, ErrNoHandshake
	}
	stream, err := session.OpenStream()
	if err != nil {
		return nil, c.streamError(context.Background(), op, err)
	}
	return stream, nil
}

// streamError turns the failure of a stream read or write into the error
// the caller should see: the context's, the client's end (ErrClosed or
// ErrSessionLost, unwrapped), or the guest's protocol violation.
func (c *Client) streamError(ctx context.Context, op string, err error) error {
	if ctxErr := ctx.Err(); ctxErr != nil {
		return fmt.Errorf("control: %s: %w", op, ctxErr)
	}
	c.mu.Lock()
	ended := c.err
	c.mu.Unlock()
	if ended == nil && c.session.IsClosed() {
		// The session died and watch has not recorded it yet.
		ended = c.lost()
	}
	if ended != nil {
		return ended
	}
	if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, wire.ErrMalformed) {
		return fmt.Errorf("control: %s: %w: %w", op, ErrProtocol, err)
	}
	return fmt.Errorf("control: %s: %w", op, err)
}

// cancelOnDone makes blocked and later reads and writes on stream fail once
// ctx is done. It returns a function that stops watching ctx.
func cancelOnDone(ctx context.Context, stream *yamux.Stream) (stop func() bool) {
	return context.AfterFunc(ctx, func() { stream.SetDeadline(time.Now()) })
}
