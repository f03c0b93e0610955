package channel

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// Where virtio-serial ports appear, and how long Open waits for one.
const (
	portsDir    = "/sys/class/virtio-ports"
	devDir      = "/dev"
	openTimeout = 5 * time.Second
)

// Open returns the guest end of the channel called name, once it exists and
// the host end is connected. It waits a bounded time for both: the port
// appears when its driver has probed it, and the host connects when the VMM
// has opened its socket.
//
// virtio-serial ports are numbered in the order the VMM declares them, so
// they are found by the name the host gave them
// (/sys/class/virtio-ports/vportNpM/name), not by number. vsock channels
// (Configure) are streams to the host on the port their name maps to; the
// returned File is then a socket.
func Open(name string) (*os.File, error) {
	if vsockPorts != nil {
		port, ok := vsockPorts[name]
		if !ok {
			return nil, fmt.Errorf("channel %q: not in sandbox.channels", name)
		}
		f, err := openVsock(hostCID, port, openTimeout)
		if err != nil {
			return nil, fmt.Errorf("channel %q: %w", name, err)
		}
		return f, nil
	}
	return open(portsDir, devDir, name, openTimeout)
}

func open(portsDir, devDir, name string, timeout time.Duration) (*os.File, error) {
	deadline := time.Now().Add(timeout)
	for {
		f, err := tryOpen(portsDir, devDir, name)
		if err == nil {
			return f, nil
		}
		if time.Now().After(deadline) {
			return nil, fmt.Errorf("channel %q: %w after %v", name, err, timeout)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

var (
	errNoPort       = errors.New("no virtio-serial port with this name")
	errHostNotReady = errors.New("host end not connected")
)

func tryOpen(portsDir, devDir, name string) (*os.File, error) {
	port, err := findPort(portsDir, name)
	if err != nil {
		return nil, err
	}
	path := filepath.Join(devDir, port)
	// Non-blocking, so that the returned File uses the runtime poller and a
	// Close unblocks a pending Read.
	fd, err := unix.Open(path, unix.O_RDWR|unix.O_NONBLOCK|unix.O_CLOEXEC|unix.O_NOCTTY, 0)
	if err != nil {
		// The device node may appear a little after the sysfs entry.
		return nil, fmt.Errorf("open %s: %w", path, err)
	}
	// Until the host end is connected the port reports POLLHUP and reads
	// return 0, which would look like the host hanging up.
	fds := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN | unix.POLLOUT}}
	if _, err := unix.Poll(fds, 0); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("poll %s: %w", path, err)
	}
	if fds[0].Revents&unix.POLLHUP != 0 {
		unix.Close(fd)
		return nil, errHostNotReady
	}
	return os.NewFile(uintptr(fd), path), nil
}

// findPort returns the device name (vportNpM) of the port called name.
func findPort(portsDir, name string) (string, error) {
	entries, err := os.ReadDir(portsDir)
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return "", err
	}
	for _, e := range entries {
		b, err := os.ReadFile(filepath.Join(portsDir, e.Name(), "name"))
		if err != nil {
			continue // a port being removed, or without a name
		}
		if strings.TrimSpace(string(b)) == name {
			return e.Name(), nil
		}
	}
	return "", errNoPort
}
