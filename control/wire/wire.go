// Package wire defines the messages of the control protocol and how they are
// framed on a stream. It is the byte-level layer under package control;
// ../PROTOCOL.md is the specification and the constants here mirror it.
//
// Every message is a 5-byte header (1-byte type, 4-byte big-endian payload
// length) followed by the payload: JSON for control messages, raw bytes for
// output chunks. Readers are direction-specific (ReadHostMessage on the guest,
// ReadGuestMessage on the host) so that a peer can only send the messages its
// role allows, and every reader checks the length against the type's limit
// before it allocates anything.
package wire

import (
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"
)

// Version is the protocol version this package speaks. It is exchanged in
// the hello handshake; see the version history in PROTOCOL.md.
const Version = 1

// Limits, as specified in PROTOCOL.md.
const (
	// HeaderSize is the size of a message header: type and payload length.
	HeaderSize = 5
	// MaxJSONPayload bounds the payload of every JSON-encoded message.
	MaxJSONPayload = 1 << 20
	// MaxChunkPayload bounds the payload of a stdout or stderr chunk.
	MaxChunkPayload = 64 << 10
	// MaxErrorMessage bounds the message of an error reply, in bytes.
	MaxErrorMessage = 4096

	// Bounds on individual fields, checked after JSON decoding.
	maxCapabilities = 64
	maxTokenLen     = 64 // capability names, boot event names
	maxBootEvents   = 64
	maxKernelLen    = 256
	maxExitCode     = 255
	maxTrustAnchors = 8
	maxAnchorLen    = 16 << 10 // one PEM certificate
)

// Type is the first byte of a message header. Host-to-guest types are in
// 0x01-0x3f, guest-to-host types in 0x41-0x7f; 0x00 and 0x80-0xff are
// reserved.
type Type uint8

// Host-to-guest message types.
const (
	TypeHello    Type = 0x01
	TypeExec     Type = 0x02
	TypeShutdown Type = 0x03
)

// Guest-to-host message types.
const (
	TypeHelloReply    Type = 0x41
	TypeStarted       Type = 0x42
	TypeStdout        Type = 0x43
	TypeStderr        Type = 0x44
	TypeExit          Type = 0x45
	TypeShutdownReply Type = 0x46
	TypeError         Type = 0x7f
)

func (t Type) String() string {
	switch t {
	case TypeHello:
		return "hello"
	case TypeExec:
		return "exec"
	case TypeShutdown:
		return "shutdown"
	case TypeHelloReply:
		return "hello-reply"
	case TypeStarted:
		return "started"
	case TypeStdout:
		return "stdout"
	case TypeStderr:
		return "stderr"
	case TypeExit:
		return "exit"
	case TypeShutdownReply:
		return "shutdown-reply"
	case TypeError:
		return "error"
	}
	return fmt.Sprintf("type 0x%02x", uint8(t))
}

// ErrMalformed is wrapped by every error that reports bytes which do not
// form a valid message: unknown or misdirected type, oversized payload,
// invalid JSON, or fields out of bounds.
var ErrMalformed = errors.New("wire: malformed message")

// Message is one of the message structs of this package.
type Message interface {
	// Type is the header type the message is sent with.
	Type() Type
}

// Hello opens the handshake stream (host to guest).
type Hello struct {
	Version      int      `json:"version"`
	Capabilities []string `json:"capabilities"`
	// TrustAnchors are PEM certificates the guest must trust for TLS
	// before it answers; omitted when there are none.
	TrustAnchors []string `json:"trustAnchors,omitempty"`
}

// HelloReply answers Hello (guest to host). The guest sends its own version
// even when it differs from the host's so that the host can report both.
type HelloReply struct {
	Version       int         `json:"version"`
	Capabilities  []string    `json:"capabilities"`
	KernelRelease string      `json:"kernelRelease"`
	Boot          []BootEvent `json:"boot"`
}

// BootEvent is one milestone of the guest's boot.
type BootEvent struct {
	Name string `json:"name"`
	// SinceBootNs is CLOCK_BOOTTIME at the milestone, in nanoseconds.
	SinceBootNs int64 `json:"sinceBootNs"`
}

// Exec asks the guest to run a command (host to guest).
type Exec struct {
	Command string            `json:"command"`
	Args    []string          `json:"args"`
	Cwd     string            `json:"cwd"`
	Env     map[string]string `json:"env"`
	// SignalNote asks the guest to end stderr with "killed by signal N"
	// when signal N kills the command (0.6.0's exec did); omitted: false.
	SignalNote bool `json:"signalNote,omitempty"`
}

// Shutdown asks the guest to stop all processes, sync and power off.
type Shutdown struct{}

// Started reports that the command of an Exec is running.
type Started struct {
	Pid int `json:"pid"`
}

// Stdout is a chunk of a command's standard output.
type Stdout struct{ Data []byte }

// Stderr is a chunk of a command's standard error.
type Stderr struct{ Data []byte }

// Exit reports how the command of an Exec ended: its exit status, or 128+N
// when signal N killed it.
type Exit struct {
	ExitCode int `json:"exitCode"`
}

// ShutdownReply reports that the guest has stopped its processes and synced;
// it powers off once the host has closed the stream.
type ShutdownReply struct{}

// Error reports that the guest could not serve a request.
type Error struct {
	Message string `json:"message"`
}

func (*Hello) Type() Type         { return TypeHello }
func (*Exec) Type() Type          { return TypeExec }
func (*Shutdown) Type() Type      { return TypeShutdown }
func (*HelloReply) Type() Type    { return TypeHelloReply }
func (*Started) Type() Type       { return TypeStarted }
func (*Stdout) Type() Type        { return TypeStdout }
func (*Stderr) Type() Type        { return TypeStderr }
func (*Exit) Type() Type          { return TypeExit }
func (*ShutdownReply) Type() Type { return TypeShutdownReply }
func (*Error) Type() Type         { return TypeError }

// WriteMessage encodes m and writes it with a single Write call, so that
// concurrent writers serialised by a mutex never interleave partial
// messages. It refuses to write what the peer would reject.
func WriteMessage(w io.Writer, m Message) error {
	if err := validate(m); err != nil {
		return fmt.Errorf("wire: invalid %v: %w", m.Type(), err)
	}
	var payload []byte
	switch m := m.(type) {
	case *Stdout:
		payload = m.Data
	case *Stderr:
		payload = m.Data
	default:
		var err error
		if payload, err = json.Marshal(m); err != nil {
			return fmt.Errorf("wire: encode %v: %w", m.Type(), err)
		}
	}
	if limit := payloadLimit(m.Type()); len(payload) > limit {
		return fmt.Errorf("wire: %v payload of %d bytes exceeds the limit of %d", m.Type(), len(payload), limit)
	}
	buf := make([]byte, HeaderSize+len(payload))
	buf[0] = byte(m.Type())
	binary.BigEndian.PutUint32(buf[1:HeaderSize], uint32(len(payload)))
	copy(buf[HeaderSize:], payload)
	_, err := w.Write(buf)
	return err
}

// ReadHostMessage reads one message sent by the host. The guest uses it.
// It returns io.EOF, unwrapped, when r ends cleanly before a header.
func ReadHostMessage(r io.Reader) (Message, error) {
	return readMessage(r, func(t Type) Message {
		switch t {
		case TypeHello:
			return &Hello{}
		case TypeExec:
			return &Exec{}
		case TypeShutdown:
			return &Shutdown{}
		}
		return nil
	})
}

// ReadGuestMessage reads one message sent by the guest. The host uses it.
// It returns io.EOF, unwrapped, when r ends cleanly before a header.
func ReadGuestMessage(r io.Reader) (Message, error) {
	return readMessage(r, func(t Type) Message {
		switch t {
		case TypeHelloReply:
			return &HelloReply{}
		case TypeStarted:
			return &Started{}
		case TypeStdout:
			return &Stdout{}
		case TypeStderr:
			return &Stderr{}
		case TypeExit:
			return &Exit{}
		case TypeShutdownReply:
			return &ShutdownReply{}
		case TypeError:
			return &Error{}
		}
		return nil
	})
}

func payloadLimit(t Type) int {
	if t == TypeStdout || t == TypeStderr {
		return MaxChunkPayload
	}
	return MaxJSONPayload
}

func readMessage(r io.Reader, newMessage func(Type) Message) (Message, error) {
	var hdr [HeaderSize]byte
	if _, err := io.ReadFull(r, hdr[:]); err != nil {
		return nil, err
	}
	t := Type(hdr[0])
	m := newMessage(t)
	if m == nil {
		return nil, fmt.Errorf("%w: unexpected %v", ErrMalformed, t)
	}
	n := binary.BigEndian.Uint32(hdr[1:])
	if limit := payloadLimit(t); n > uint32(limit) {
		return nil, fmt.Errorf("%w: %v payload of %d bytes exceeds the limit of %d", ErrMalformed, t, n, limit)
	}
	payload := make([]byte, n)
	if _, err := io.ReadFull(r, payload); err != nil {
		if err == io.EOF {
			err = io.ErrUnexpectedEOF
		}
		return nil, fmt.Errorf("wire: read %v payload: %w", t, err)
	}
	switch m := m.(type) {
	case *Stdout:
		m.Data = payload
	case *Stderr:
		m.Data = payload
	default:
		// Unknown fields are ignored so that a later version may add
		// optional fields without breaking older peers.
		if err := json.Unmarshal(payload, m); err != nil {
			return nil, fmt.Errorf("%w: %v: %w", ErrMalformed, t, err)
		}
	}
	if err := validate(m); err != nil {
		return nil, fmt.Errorf("%w: %v: %w", ErrMalformed, t, err)
	}
	return m, nil
}

// validate checks the bounds that JSON decoding alone does not.
func validate(m Message) error {
	switch m := m.(type) {
	case *Hello:
		if len(m.TrustAnchors) > maxTrustAnchors {
			return fmt.Errorf("more than %d trust anchors", maxTrustAnchors)
		}
		for _, a := range m.TrustAnchors {
			if a == "" || len(a) > maxAnchorLen {
				return fmt.Errorf("trust anchor of %d bytes", len(a))
			}
		}
		return validateTokens("capabilities", m.Capabilities)
	case *HelloReply:
		if err := validateTokens("capabilities", m.Capabilities); err != nil {
			return err
		}
		if len(m.KernelRelease) > maxKernelLen {
			return fmt.Errorf("kernel release longer than %d bytes", maxKernelLen)
		}
		if len(m.Boot) > maxBootEvents {
			return fmt.Errorf("more than %d boot events", maxBootEvents)
		}
		for _, e := range m.Boot {
			if e.Name == "" || len(e.Name) > maxTokenLen {
				return fmt.Errorf("boot event name of %d bytes", len(e.Name))
			}
			if e.SinceBootNs < 0 {
				return errors.New("negative boot event time")
			}
		}
	case *Exec:
		if m.Command == "" {
			return errors.New("empty command")
		}
		if strings.IndexByte(m.Command, 0) >= 0 || strings.IndexByte(m.Cwd, 0) >= 0 {
			return errors.New("NUL byte in command or cwd")
		}
		for _, a := range m.Args {
			if strings.IndexByte(a, 0) >= 0 {
				return errors.New("NUL byte in argument")
			}
		}
		for k, v := range m.Env {
			if k == "" || strings.ContainsAny(k, "=\x00") || strings.IndexByte(v, 0) >= 0 {
				return fmt.Errorf("invalid environment variable %q", k)
			}
		}
	case *Started:
		if m.Pid <= 0 {
			return fmt.Errorf("invalid pid %d", m.Pid)
		}
	case *Stdout:
		if len(m.Data) == 0 {
			return errors.New("empty chunk")
		}
	case *Stderr:
		if len(m.Data) == 0 {
			return errors.New("empty chunk")
		}
	case *Exit:
		if m.ExitCode < 0 || m.ExitCode > maxExitCode {
			return fmt.Errorf("exit code %d out of range", m.ExitCode)
		}
	case *Error:
		if len(m.Message) > MaxErrorMessage {
			return fmt.Errorf("error message longer than %d bytes", MaxErrorMessage)
		}
	}
	return nil
}

func validateTokens(what string, tokens []string) error {
	if len(tokens) > maxCapabilities {
		return fmt.Errorf("more than %d %s", maxCapabilities, what)
	}
	for _, c := range tokens {
		if c == "" || len(c) > maxTokenLen {
			return fmt.Errorf("%s entry of %d bytes", what, len(c))
		}
	}
	return nil
}
