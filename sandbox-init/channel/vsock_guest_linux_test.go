package channel

import (
	"io"
	"os"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// TestVsockLoopbackInGuest runs inside a sandbox VM (vmm/krun's guest test
// copies this package's test binary in and sets SANDBOX_GUEST_TEST=1): it
// drives openVsock against the guest kernel's vsock_loopback transport, the
// same AF_VSOCK code path libkrun's virtio-vsock takes, with the local CID
// standing in for the host's.
func TestVsockLoopbackInGuest(t *testing.T) {
	if os.Getenv("SANDBOX_GUEST_TEST") != "1" {
		t.Skip("runs inside a sandbox VM with vsock_loopback (vmm/krun TestGuestPaths)")
	}
	const port = 5005
	// Nothing listens yet: the dial must wait, not fail.
	ln, err := unix.Socket(unix.AF_VSOCK, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(ln)
	go func() {
		time.Sleep(100 * time.Millisecond)
		if err := unix.Bind(ln, &unix.SockaddrVM{CID: unix.VMADDR_CID_ANY, Port: port}); err != nil {
			t.Error(err)
			return
		}
		if err := unix.Listen(ln, 1); err != nil {
			t.Error(err)
			return
		}
		fd, _, err := unix.Accept(ln)
		if err != nil {
			t.Error(err)
			return
		}
		conn := os.NewFile(uintptr(fd), "accepted")
		defer conn.Close()
		io.Copy(conn, conn) // echo until the guest end half-closes
	}()
	f, err := openVsock(unix.VMADDR_CID_LOCAL, port, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	msg := make([]byte, 256<<10)
	for i := range msg {
		msg[i] = byte(i * 7)
	}
	go func() {
		f.Write(msg)
		// Through SyscallConn: Fd would switch the file to blocking mode.
		if rc, err := f.SyscallConn(); err == nil {
			rc.Control(func(fd uintptr) { unix.Shutdown(int(fd), unix.SHUT_WR) })
		}
	}()
	f.SetReadDeadline(time.Now().Add(10 * time.Second))
	got, err := io.ReadAll(f)
	if err != nil {
		t.Fatal(err)
	}
	if string(got) != string(msg) {
		t.Fatalf("echo: %d bytes back of %d", len(got), len(msg))
	}
	// Unknown port: refused at once (not retried forever).
	if _, err := openVsock(unix.VMADDR_CID_LOCAL, port+1, 300*time.Millisecond); err == nil {
		t.Fatal("connected to a port nobody listens on")
	}
}
