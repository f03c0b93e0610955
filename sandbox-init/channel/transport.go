package channel

import (
	"fmt"
	"strconv"
	"strings"
)

// Transport says how channels reach the host. The zero Transport is
// virtio-serial ports found by name.
type Transport struct {
	// vsock maps channel names to vsock ports on the host (CID 2); nil
	// means virtio-serial.
	vsock map[string]uint32
}

// IsVsock reports whether channels are vsock ports.
func (t Transport) IsVsock() bool { return t.vsock != nil }

// ParseTransport reads the value of sandbox.channels=:
// "vsock:<name>=<port>,<name>=<port>,..." with names of 1-64 of
// A-Za-z0-9._- and ports 1..2^32-2, each name and port once.
func ParseTransport(value string) (Transport, error) {
	rest, ok := strings.CutPrefix(value, "vsock:")
	if !ok {
		return Transport{}, fmt.Errorf("want vsock:<name>=<port>,...")
	}
	t := Transport{vsock: map[string]uint32{}}
	usedPorts := map[uint32]bool{}
	for _, entry := range strings.Split(rest, ",") {
		name, p, ok := strings.Cut(entry, "=")
		if !ok || name == "" || len(name) > 64 || strings.Trim(name, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-") != "" {
			return Transport{}, fmt.Errorf("%q: want <name>=<port> with a name of 1-64 of A-Za-z0-9._-", entry)
		}
		port, err := strconv.ParseUint(p, 10, 32)
		// 0xFFFFFFFF is VMADDR_PORT_ANY.
		if err != nil || port == 0 || port == 0xFFFFFFFF {
			return Transport{}, fmt.Errorf("%q: port must be 1..4294967294", entry)
		}
		if _, dup := t.vsock[name]; dup || usedPorts[uint32(port)] {
			return Transport{}, fmt.Errorf("%q: name or port given twice", entry)
		}
		t.vsock[name] = uint32(port)
		usedPorts[uint32(port)] = true
	}
	return t, nil
}

// transport is the one Configure set; read by Open.
var transport Transport

// Configure sets how Open reaches channels, from the kernel command line.
// Call it once, before the first Open.
func Configure(t Transport) { transport = t }
