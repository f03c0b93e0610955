// Package vmm defines what a VM engine is given and what it hands back: one
// Spec in, one running Machine out, and what the engines share (Validate,
// the boot probe, the guest's MAC, the child process). Engines (vmm/qemu,
// vmm/krun) live in sub-packages; nothing above this package knows which
// engine runs a guest.
package vmm

import (
	"context"
	"io"
	"os"

	"github.com/torkbot/sandbox/bootparams"
)

// Spec is everything an engine needs to start a guest, and nothing else.
type Spec struct {
	Kernel string // uncompressed vmlinux (ELF with a PVH note)
	Initrd string // newc cpio holding sandbox-init
	// Boot is what init reads from the kernel command line
	// (bootparams/CMDLINE.md). Engines fill in what only they know (how
	// channels and the root disk reach the guest, a NIC's real MTU) on
	// their own copy, then encode it after their own kernel parameters.
	Boot bootparams.Params

	CPUs      int
	MemoryMiB int

	// RootDisk is the guest's /dev/vda.
	RootDisk Disk

	// Channels are named byte streams between host and guest. The engine
	// takes ownership of each Conn: it hands it to the VMM and closes its own
	// copy. The caller keeps the other end of the socket pair.
	Channels []Channel

	// NIC, when set, is the VMM's end of a stream socket pair carrying the
	// guest's Ethernet frames, each preceded by its length as a 4-byte
	// big-endian integer (QEMU's -netdev stream and libkrun's unixstream
	// speak exactly this). The engine takes ownership, as for Channels.
	// Without a NIC the guest has no network at all.
	NIC *os.File
	// NICMTU is the MTU the engine advertises to the guest's NIC.
	NICMTU int

	// Console receives everything the guest writes to its console. It is
	// written from one goroutine; it must not block for long.
	Console io.Writer

	// Env is the VMM process's whole environment ("KEY=value"): the one of
	// the boot() call, never this process's own (see Command). Nil: empty.
	Env []string
	// TempDir is where the engine may create temporary files and sockets
	// ($TMPDIR of the boot() call).
	TempDir string
}

// GuestMAC is the guest NIC's address under every engine: locally
// administered, QEMU's prefix. One guest per NIC, so one address serves.
const GuestMAC = "52:54:00:12:34:56"

// Disk is the guest's root block device: an image file the VMM opens
// itself, or an NBD export the host serves.
type Disk struct {
	Path     string
	Format   string // "qcow2" or "raw"
	ReadOnly bool
	// NBD, when set, is the VMM's end of a stream socket pair on which the
	// host serves the disk over NBD (export "root"); Path and Format are
	// then unused. The engine takes ownership.
	NBD *os.File
}

// Channel is one named host↔guest byte stream (a virtio-serial port for QEMU,
// a vsock port for libkrun). The guest finds it by Name.
type Channel struct {
	Name string
	Conn *os.File // the VMM's end of a connected stream socket pair
}

// Machine is a started VMM child process.
type Machine interface {
	// Done is closed when the VMM process has exited and its console has
	// been read to the end.
	Done() <-chan struct{}
	// ExitStatus describes how the VMM exited ("exit status 1", "signal:
	// killed"); valid after Done is closed.
	ExitStatus() string
	// Kill stops the VMM at once. Safe to call at any time, more than once.
	Kill()
	// Pid is the VMM's process id.
	Pid() int
}

// Engine starts machines.
type Engine interface {
	// Name is the engine's name as users select it with SANDBOX_ENGINE.
	Name() string
	// Start launches a VMM for spec. The machine runs until the guest powers
	// off, Kill is called or the calling process dies; ctx bounds only the start.
	Start(ctx context.Context, spec Spec) (Machine, error)
}
