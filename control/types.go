package control

import (
	"maps"
	"time"
)

// Command is a command to run in the guest.
type Command struct {
	// Name is the program: a path, or a name looked up in the PATH of Env.
	// It is also argv[0].
	Name string
	// Args are the arguments after argv[0].
	Args []string
	// Dir is the working directory; empty means "/".
	Dir string
	// Env is merged over the guest's base environment (Server.Env). On the
	// guest side (Handler.Start) it is the complete, merged environment.
	Env map[string]string
	// SignalNote: when signal N kills the command, the guest appends
	// "killed by signal N" to its stderr, on a line of its own, as 0.6.0's
	// exec did.
	SignalNote bool
	// Started, on the host side only, is called by Client.Run when the
	// guest reports the command running, before any of its output; never
	// when it could not start.
	Started func()
}

func mergeEnv(base, env map[string]string) map[string]string {
	merged := maps.Clone(base)
	if merged == nil {
		merged = map[string]string{}
	}
	maps.Copy(merged, env)
	return merged
}

// FD names an output stream of a command.
type FD int

// The output streams of a command.
const (
	Stdout FD = 1
	Stderr FD = 2
)

func (fd FD) String() string {
	switch fd {
	case Stdout:
		return "stdout"
	case Stderr:
		return "stderr"
	}
	return "fd?"
}

// OutputSink receives a command's output as the guest produces it. Run calls
// it from Run's own goroutine, in order for each FD, never concurrently.
// The sink owns chunk and may keep it. A slow sink slows the command down
// (flow control) without affecting other commands.
type OutputSink func(fd FD, chunk []byte)

// Setup is what the host asks the guest to do before it is ready; it
// travels with the host's hello.
type Setup struct {
	// TrustAnchors are PEM certificates (the sandbox's HTTPS interception
	// CA) the guest adds to its system trust store before any command
	// runs. The handshake fails when the guest cannot install them.
	TrustAnchors []string
}

// CapabilityTrustAnchors is announced by a guest that installs
// Setup.TrustAnchors.
const CapabilityTrustAnchors = "trust-anchors"

// GuestInfo is what the guest reports in the handshake.
type GuestInfo struct {
	// ProtocolVersion is the guest's protocol version; equal to the host's
	// when Handshake succeeds.
	ProtocolVersion int
	// Capabilities lists the operations the guest serves, e.g. "exec".
	Capabilities []string
	// KernelRelease is the guest kernel's `uname -r`.
	KernelRelease string
	// Boot is the guest's boot timeline, in order.
	Boot []BootEvent
}

// BootEvent is one milestone of the guest's boot.
type BootEvent struct {
	Name string
	// At is the time since the guest kernel started (CLOCK_BOOTTIME).
	At time.Duration
}
