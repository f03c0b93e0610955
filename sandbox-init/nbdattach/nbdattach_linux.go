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
// generic netlink (family "nbd", include/uapi/linux/nbd-netlink.h).
package nbdattach

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"time"

	"golang.org/x/sys/unix"

	"github.com/torkbot/sandbox/vmm/krun/nbdrelay"
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
	Export nbdrelay.Export

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
	attrs := appendU64(nil, nbdAttrSizeBytes, exp.Size)
	attrs = appendU64(attrs, nbdAttrBlockSizeBytes, blockSize)
	attrs = appendU64(attrs, nbdAttrServerFlags, uint64(exp.Flags))
	attrs = appendU64(attrs, nbdAttrDeadConnTimeout, uint64(DeadConnTimeout/time.Second))
	attrs = appendSockets(attrs, int(sock.Fd()))
	reply, err := genlRequest(nbdCmdConnect, attrs)
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
func connect(dial Dial, export string) (*os.File, nbdrelay.Export, error) {
	sock, err := dial()
	if err != nil {
		return nil, nbdrelay.Export{}, err
	}
	exp, err := nbdrelay.Handshake(sock, export)
	if err != nil {
		sock.Close()
		return nil, nbdrelay.Export{}, err
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
	attrs := appendU32(nil, nbdAttrIndex, d.Index)
	attrs = appendSockets(attrs, int(sock.Fd()))
	// The kernel takes a new socket only in place of one it has marked
	// dead, which it may do a moment after the hangup shows here.
	deadline := time.Now().Add(5 * time.Second)
	for {
		_, err = genlRequest(nbdCmdReconfigure, attrs)
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

// Netlink attributes.

func appendAttr(b []byte, typ uint16, payload []byte) []byte {
	l := 4 + len(payload)
	b = binary.NativeEndian.AppendUint16(b, uint16(l))
	b = binary.NativeEndian.AppendUint16(b, typ)
	b = append(b, payload...)
	for len(b)%4 != 0 {
		b = append(b, 0)
	}
	return b
}

func appendU32(b []byte, typ uint16, v uint32) []byte {
	return appendAttr(b, typ, binary.NativeEndian.AppendUint32(nil, v))
}

func appendU64(b []byte, typ uint16, v uint64) []byte {
	return appendAttr(b, typ, binary.NativeEndian.AppendUint64(nil, v))
}

func appendSockets(b []byte, fd int) []byte {
	item := appendU32(nil, nbdSockFD, uint32(fd))
	items := appendAttr(nil, nbdSockItem|unix.NLA_F_NESTED, item)
	return appendAttr(b, nbdAttrSockets|unix.NLA_F_NESTED, items)
}

// parseAttrs walks a run of attributes; malformed input ends the walk.
func parseAttrs(b []byte, fn func(typ uint16, payload []byte)) {
	for len(b) >= 4 {
		l := int(binary.NativeEndian.Uint16(b))
		typ := binary.NativeEndian.Uint16(b[2:]) &^ (unix.NLA_F_NESTED | unix.NLA_F_NET_BYTEORDER)
		if l < 4 || l > len(b) {
			return
		}
		fn(typ, b[4:l])
		l = (l + 3) &^ 3
		if l > len(b) {
			return
		}
		b = b[l:]
	}
}

func findU32(attrs []byte, want uint16) (uint32, bool) {
	var v uint32
	var ok bool
	parseAttrs(attrs, func(typ uint16, p []byte) {
		if typ == want && len(p) >= 4 {
			v, ok = binary.NativeEndian.Uint32(p), true
		}
	})
	return v, ok
}

// genlRequest sends one nbd command and returns the attributes of its
// reply (nil when the kernel only acknowledged).
func genlRequest(cmd uint8, attrs []byte) ([]byte, error) {
	s, err := unix.Socket(unix.AF_NETLINK, unix.SOCK_RAW|unix.SOCK_CLOEXEC, unix.NETLINK_GENERIC)
	if err != nil {
		return nil, err
	}
	defer unix.Close(s)
	if err := unix.Bind(s, &unix.SockaddrNetlink{Family: unix.AF_NETLINK}); err != nil {
		return nil, err
	}
	family, err := familyID(s, "nbd")
	if err != nil {
		return nil, err
	}
	return transact(s, family, cmd, nbdGenlVersion, attrs)
}

// familyID resolves a generic netlink family name.
func familyID(s int, name string) (uint16, error) {
	attrs := appendAttr(nil, unix.CTRL_ATTR_FAMILY_NAME, append([]byte(name), 0))
	reply, err := transact(s, unix.GENL_ID_CTRL, unix.CTRL_CMD_GETFAMILY, 1, attrs)
	if err != nil {
		if errors.Is(err, unix.ENOENT) {
			return 0, fmt.Errorf("generic netlink family %q not found: is the %s module loaded?", name, name)
		}
		return 0, err
	}
	var id uint16
	parseAttrs(reply, func(typ uint16, p []byte) {
		if typ == unix.CTRL_ATTR_FAMILY_ID && len(p) >= 2 {
			id = binary.NativeEndian.Uint16(p)
		}
	})
	if id == 0 {
		return 0, fmt.Errorf("generic netlink family %q: no id in the reply", name)
	}
	return id, nil
}

var seq uint32

// transact sends a request with NLM_F_ACK and reads until the ack or an
// error, returning the attributes of the last data message.
func transact(s int, family uint16, cmd, version uint8, attrs []byte) ([]byte, error) {
	seq++
	msg := make([]byte, 0, 20+len(attrs))
	msg = binary.NativeEndian.AppendUint32(msg, uint32(20+len(attrs)))
	msg = binary.NativeEndian.AppendUint16(msg, family)
	msg = binary.NativeEndian.AppendUint16(msg, unix.NLM_F_REQUEST|unix.NLM_F_ACK)
	msg = binary.NativeEndian.AppendUint32(msg, seq)
	msg = binary.NativeEndian.AppendUint32(msg, 0)
	msg = append(msg, cmd, version, 0, 0)
	msg = append(msg, attrs...)
	if err := unix.Sendto(s, msg, 0, &unix.SockaddrNetlink{Family: unix.AF_NETLINK}); err != nil {
		return nil, err
	}
	var data []byte
	buf := make([]byte, 1<<16)
	for {
		n, _, err := unix.Recvfrom(s, buf, 0)
		if err != nil {
			return nil, err
		}
		b := buf[:n]
		for len(b) >= 16 {
			l := int(binary.NativeEndian.Uint32(b))
			typ := binary.NativeEndian.Uint16(b[4:])
			if l < 16 || l > len(b) {
				return nil, errors.New("netlink: malformed reply")
			}
			body := b[16:l]
			switch typ {
			case unix.NLMSG_ERROR:
				if len(body) < 4 {
					return nil, errors.New("netlink: short error message")
				}
				if code := int32(binary.NativeEndian.Uint32(body)); code != 0 {
					return nil, unix.Errno(-code)
				}
				return data, nil // the ack
			case unix.NLMSG_DONE:
				return data, nil
			default:
				if len(body) >= 4 {
					data = append([]byte(nil), body[4:]...) // past the genl header
				}
			}
			if l = (l + 3) &^ 3; l > len(b) {
				break
			}
			b = b[l:]
		}
	}
}
