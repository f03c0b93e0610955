package nbdattach_test

import (
	"bytes"
	"context"
	"net"
	"os"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/torkbot/sandbox/blockstore/nbd"
	"github.com/torkbot/sandbox/blockstore/nbd/nbdtest"
	"github.com/torkbot/sandbox/internal/sockpair"
	"github.com/torkbot/sandbox/sandbox-init/nbdattach"
)

// TestAttachReconnectInGuest runs inside a sandbox VM as root (vmm/krun's
// guest test copies this test binary in and sets SANDBOX_GUEST_TEST=1). It
// serves a memory disk with blockstore/nbd on socket pairs, attaches it
// through the real kernel nbd driver, cuts the connection, and checks that
// the device reconnects with its data intact and keeps serving I/O.
func TestAttachReconnectInGuest(t *testing.T) {
	if os.Getenv("SANDBOX_GUEST_TEST") != "1" {
		t.Skip("runs inside a sandbox VM with the nbd module (vmm/krun TestGuestPaths)")
	}
	dev := nbdtest.NewMemDevice(8 << 20)
	var mu sync.Mutex
	var servers []net.Conn
	dial := func() (*os.File, error) {
		srvFile, client, err := sockpair.New("server", "client")
		if err != nil {
			return nil, err
		}
		srv, err := sockpair.FileConn(srvFile)
		if err != nil {
			client.Close()
			return nil, err
		}
		mu.Lock()
		servers = append(servers, srv)
		mu.Unlock()
		go nbd.Serve(context.Background(), srv, dev, nbd.Options{Name: "root"})
		return client, nil
	}
	d, err := nbdattach.Attach(dial, "root", t.Logf)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go d.Keep(ctx)
	if d.Export.Size != 8<<20 {
		t.Fatalf("export %+v", d.Export)
	}

	block := bytes.Repeat([]byte("reconnect"), 456)[:4096]
	writeDirect(t, d.Path, 4096, block)
	// Cut the connection under the device.
	mu.Lock()
	servers[0].Close()
	mu.Unlock()
	// I/O after the cut waits for the reconnect instead of failing.
	block2 := bytes.Repeat([]byte{0x5a}, 4096)
	writeDirect(t, d.Path, 8192, block2)
	if got := readDirect(t, d.Path, 4096); !bytes.Equal(got, block) {
		t.Fatal("data written before the reconnect is gone")
	}
	if got := readDirect(t, d.Path, 8192); !bytes.Equal(got, block2) {
		t.Fatal("data written across the reconnect is wrong")
	}
	if !bytes.Equal(dev.Bytes(4096, 4096), block) || !bytes.Equal(dev.Bytes(8192, 4096), block2) {
		t.Fatal("the server's disk does not hold what the guest wrote")
	}
	mu.Lock()
	n := len(servers)
	mu.Unlock()
	if n < 2 {
		t.Fatalf("%d connections: never reconnected", n)
	}
}

// alignedBuf returns a page-aligned buffer, as O_DIRECT needs.
func alignedBuf(n int) []byte {
	b := make([]byte, n+4096)
	off := 4096 - int(uintptr(unsafePointer(b))%4096)
	return b[off : off+n]
}

func writeDirect(t *testing.T, path string, off int64, data []byte) {
	t.Helper()
	f, err := os.OpenFile(path, os.O_WRONLY|unix.O_DIRECT, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	buf := alignedBuf(len(data))
	copy(buf, data)
	done := make(chan error, 1)
	go func() {
		_, err := f.WriteAt(buf, off)
		if err == nil {
			err = f.Sync()
		}
		done <- err
	}()
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("write hung")
	}
}

func readDirect(t *testing.T, path string, off int64) []byte {
	t.Helper()
	f, err := os.OpenFile(path, os.O_RDONLY|unix.O_DIRECT, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	buf := alignedBuf(4096)
	if _, err := f.ReadAt(buf, off); err != nil {
		t.Fatal(err)
	}
	return append([]byte(nil), buf...)
}
