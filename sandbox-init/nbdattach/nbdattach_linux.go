// Package nbdattach attaches the guest's root disk from an NBD export the
// host serves over a channel, as /dev/nbdN through the kernel's nbd driver,
// and keeps it attached when the channel drops: it reconnects, redoes the
// handshake and gives the kernel the new socket (NBD_CMD_RECONFIGURE). The
// kernel holds the requests of a dead connection for DeadConnTimeout and
// re-sends them on the new one, so no acknowledged write is lost and no
// unacknowledged one is half-applied (NBD requests may be repeated).
//
// Under libkrun this is how the root disk arrives (vmm/krun): the channel is
// a vsock stream, which the kernel can use directly. It is configured over
// generic netlink (family "nbd", include/uapi/linux/nbd-netlink.h) with
// github.com/vishvananda/netlink's nl package (sequence numbers, acks and
// error replies are its job), and the handshake is blockstore/nbd's client.
package nbdattach

import (
	"context"
	"errors"
	"fmt"
	"os"
	"time"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netlink/nl"
	"golang.org/x/sys/unix"

	"github.com/torkbot/sandbox/blockstore/nbd"
)

// nbd-netlink.h.
const (
	nbdGenlVersion = 1

	nbdCmdConnect     = 1
	nbdCmdReconfigure = 3

	nbdAttrIndex           = 1
	nbdAttrSizeBytes       = 2
	nbdAttrBlockSizeBytes  = 3
	nbdAttrServerFlags     = 5
	nbdAttrSockets         = 7
	nbdAttrDeadConnTimeout = 8

	nbdSockItem = 1
	nbdSockFD   = 1
)

// DeadConnTimeout is how long the kernel holds I/O for a reconnect before
// failing it with EIO.
const DeadConnTimeout = 30 * time.Second

// Dial returns a new connected socket to the export's server.
type Dial func() (*os.File, error)

// Device is an attached NBD device.
type Device struct {
	Index  uint32
	Path   string // /dev/nbdN
	Export nbd.Export

	dial   Dial
	export string
	logf   func(format string, args ...any)
	watch  *os.File // a duplicate of the live socket, watched for hangup
}

// Attach dials, runs the handshake for export, and connects a free nbd
// device to the socket. The socket must be a stream socket (vsock or unix);
// the kernel takes its own reference, and Attach closes the caller's.
func Attach(dial Dial, export string, logf func(string, ...any)) (*Device, error) {
	sock, exp, err := connect(dial, export)
	if err != nil {
		return nil, err
	}
	defer sock.Close()
	blockSize := uint64(4096)
	if exp.Size%blockSize != 0 {
		blockSize = 512
	}
	reply, err := genlRequest(nbdCmdConnect,
		nl.NewRtAttr(nbdAttrSizeBytes, nl.Uint64Attr(exp.Size)),
		nl.NewRtAttr(nbdAttrBlockSizeBytes, nl.Uint64Attr(blockSize)),
		nl.NewRtAttr(nbdAttrServerFlags, nl.Uint64Attr(uint64(exp.Flags))),
		nl.NewRtAttr(nbdAttrDeadConnTimeout, nl.Uint64Attr(uint64(DeadConnTimeout/time.Second))),
		sockets(sock))
	if err != nil {
		return nil, fmt.Errorf("nbd connect: %w", err)
	}
	index, ok := findU32(reply, nbdAttrIndex)
	if !ok {
		return nil, errors.New("nbd connect: no device index in the reply")
	}
	d := &Device{Index: index, Path: fmt.Sprintf("/dev/nbd%d", index), Export: exp, dial: dial, export: export, logf: logf}
	if d.watch, err = dupFile(sock); err != nil {
		return nil, err
	}
	return d, nil
}

// connect dials and runs the handshake.
func connect(dial Dial, export string) (*os.File, nbd.Export, error) {
	sock, err := dial()
	if err != nil {
		return nil, nbd.Export{}, err
	}
	exp, err := nbd.ClientHandshake(sock, export)
	if err != nil {
		sock.Close()
		return nil, nbd.Export{}, err
	}
	return sock, exp, nil
}

func dupFile(f *os.File) (*os.File, error) {
	rc, err := f.SyscallConn()
	if err != nil {
		return nil, err
	}
	var fd int
	var derr error
	rc.Control(func(s uintptr) { fd, derr = unix.FcntlInt(s, unix.F_DUPFD_CLOEXEC, 0) })
	if derr != nil {
		return nil, derr
	}
	return os.NewFile(uintptr(fd), f.Name()), nil
}

// Keep reconnects the device whenever its connection hangs up, until ctx is
// done. Run it in its own goroutine.
func (d *Device) Keep(ctx context.Context) {
	for ctx.Err() == nil {
		waitHangup(ctx, d.watch)
		d.watch.Close()
		if ctx.Err() != nil {
			return
		}
		d.logf("%s: connection to the host lost; reconnecting", d.Path)
		for ctx.Err() == nil {
			if err := d.Reconnect(); err != nil {
				d.logf("%s: reconnect: %v", d.Path, err)
				select {
				case <-ctx.Done():
				case <-time.After(time.Second):
				}
				continue
			}
			d.logf("%s: reconnected", d.Path)
			break
		}
	}
}

// waitHangup returns when f's peer has hung up or ctx is done.
func waitHangup(ctx context.Context, f *os.File) {
	rc, err := f.SyscallConn()
	if err != nil {
		return
	}
	for ctx.Err() == nil {
		var hung bool
		rc.Control(func(fd uintptr) {
			// Only hangup events: the kernel's nbd thread reads the data.
			pfd := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLRDHUP}}
			if n, _ := unix.Poll(pfd, 500); n > 0 && pfd[0].Revents&(unix.POLLRDHUP|unix.POLLHUP|unix.POLLERR|unix.POLLNVAL) != 0 {
				hung = true
			}
		})
		if hung {
			return
		}
	}
}

// Reconnect dials a new connection and hands it to the kernel in place of
// the dead one. The export must be the one attached (same size and flags).
func (d *Device) Reconnect() error {
	sock, exp, err := connect(d.dial, d.export)
	if err != nil {
		return err
	}
	defer sock.Close()
	if exp != d.Export {
		return fmt.Errorf("the export changed across the reconnect (%+v, was %+v)", exp, d.Export)
	}
	// The kernel takes a new socket only in place of one it has marked
	// dead, which it may do a moment after the hangup shows here.
	deadline := time.Now().Add(5 * time.Second)
	for {
		_, err = genlRequest(nbdCmdReconfigure, nl.NewRtAttr(nbdAttrIndex, nl.Uint32Attr(d.Index)), sockets(sock))
		if err == nil || !errors.Is(err, unix.ENOSPC) || time.Now().After(deadline) {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	if err != nil {
		return fmt.Errorf("nbd reconfigure: %w", err)
	}
	w, err := dupFile(sock)
	if err != nil {
		return err
	}
	d.watch = w
	return nil
}

// sockets is NBD_ATTR_SOCKETS holding sock's fd, which the kernel takes
// its own reference to.
func sockets(sock *os.File) *nl.RtAttr {
	socks := nl.NewRtAttr(nbdAttrSockets|unix.NLA_F_NESTED, nil)
	item := socks.AddRtAttr(nbdSockItem|unix.NLA_F_NESTED, nil)
	item.AddRtAttr(nbdSockFD, nl.Uint32Attr(uint32(sock.Fd())))
	return socks
}

// findU32 returns the u32 attribute want of a generic netlink reply (after
// its genl header); a malformed reply has none.
func findU32(reply []byte, want uint16) (uint32, bool) {
	if len(reply) < nl.SizeofGenlmsg {
		return 0, false
	}
	attrs, err := nl.ParseRouteAttr(reply[nl.SizeofGenlmsg:])
	if err != nil {
		return 0, false
	}
	for _, a := range attrs {
		if a.Attr.Type&^(unix.NLA_F_NESTED|unix.NLA_F_NET_BYTEORDER) == want && len(a.Value) >= 4 {
			return nl.NativeEndian().Uint32(a.Value), true
		}
	}
	return 0, false
}

// genlRequest sends one nbd command with NLM_F_ACK and returns its reply
// message (nil when the kernel only acknowledged). Each call has its own
// socket and nl's atomic sequence number, so calls may run concurrently.
func genlRequest(cmd uint8, attrs ...*nl.RtAttr) ([]byte, error) {
	family, err := netlink.GenlFamilyGet("nbd")
	if err != nil {
		if errors.Is(err, unix.ENOENT) {
			return nil, fmt.Errorf("generic netlink family \"nbd\" not found (is the nbd module loaded?): %w", err)
		}
		return nil, fmt.Errorf("generic netlink family \"nbd\": %w", err)
	}
	req := nl.NewNetlinkRequest(int(family.ID), unix.NLM_F_ACK)
	req.AddData(&nl.Genlmsg{Command: cmd, Version: nbdGenlVersion})
	for _, a := range attrs {
		req.AddData(a)
	}
	msgs, err := req.Execute(unix.NETLINK_GENERIC, 0)
	if err != nil {
		return nil, err
	}
	if len(msgs) == 0 {
		return nil, nil
	}
	return msgs[0], nil
}
