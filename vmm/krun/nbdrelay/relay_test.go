package nbdrelay_test

import (
	"bytes"
	"context"
	"encoding/binary"
	"io"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/torkbot/sandbox/blockstore/nbd/nbdtest"

	"github.com/torkbot/sandbox/blockstore/nbd"
	"github.com/torkbot/sandbox/vmm/krun/nbdrelay"
)

// startRelay serves dev with blockstore/nbd on one end of a socket pair and
// opens a relay on the other, as the helper does.
func startRelay(t testing.TB, dev nbd.Device, readOnly bool) *nbdrelay.Relay {
	t.Helper()
	hostSrv, hostCli := net.Pipe()
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Go(func() { nbd.Serve(ctx, hostSrv, dev, nbd.Options{Name: "root", ReadOnly: readOnly}) })
	r, err := nbdrelay.Open(hostCli, "root")
	if err != nil {
		t.Fatal(err)
	}
	wg.Go(func() { r.Run(ctx) })
	t.Cleanup(func() { cancel(); wg.Wait() })
	return r
}

// guest connects a client to the relay and completes the handshake.
func guest(t testing.TB, r *nbdrelay.Relay) (net.Conn, nbd.Export) {
	t.Helper()
	g, relaySide := net.Pipe()
	go r.ServeGuest(context.Background(), relaySide)
	exp, err := nbd.ClientHandshake(g, "root")
	if err != nil {
		t.Fatal(err)
	}
	return g, exp
}

func request(typ uint16, cookie, off uint64, length uint32) []byte {
	be := binary.BigEndian
	b := be.AppendUint32(nil, 0x25609513)
	b = be.AppendUint16(b, 0)
	b = be.AppendUint16(b, typ)
	b = be.AppendUint64(b, cookie)
	b = be.AppendUint64(b, off)
	return be.AppendUint32(b, length)
}

func readReply(t *testing.T, c net.Conn, n int) (errno uint32, cookie uint64, data []byte) {
	t.Helper()
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	var h [16]byte
	if _, err := io.ReadFull(c, h[:]); err != nil {
		t.Fatal(err)
	}
	errno, cookie = binary.BigEndian.Uint32(h[4:]), binary.BigEndian.Uint64(h[8:])
	if errno == 0 && n > 0 {
		data = make([]byte, n)
		if _, err := io.ReadFull(c, data); err != nil {
			t.Fatal(err)
		}
	}
	return errno, cookie, data
}

func TestRelayReadWrite(t *testing.T) {
	dev := nbdtest.NewMemDevice(1 << 20)
	r := startRelay(t, dev, false)
	g, exp := guest(t, r)
	defer g.Close()
	if exp.Size != 1<<20 || exp.ReadOnly() {
		t.Fatalf("export %+v", exp)
	}
	data := bytes.Repeat([]byte("sandbox!"), 512)
	go g.Write(append(request(1, 7, 4096, uint32(len(data))), data...))
	if errno, cookie, _ := readReply(t, g, 0); errno != 0 || cookie != 7 {
		t.Fatalf("write: errno %d cookie %d", errno, cookie)
	}
	go g.Write(request(0, 8, 4096, uint32(len(data))))
	errno, cookie, got := readReply(t, g, len(data))
	if errno != 0 || cookie != 8 || !bytes.Equal(got, data) {
		t.Fatalf("read: errno %d cookie %d, %d bytes equal=%v", errno, cookie, len(got), bytes.Equal(got, data))
	}
	// An unknown command is answered by the relay and the host stream
	// stays in step.
	go g.Write(request(99, 9, 0, 0))
	if errno, cookie, _ := readReply(t, g, 0); errno != 22 || cookie != 9 {
		t.Fatalf("unknown command: errno %d cookie %d", errno, cookie)
	}
	go g.Write(request(3, 10, 0, 0))
	if errno, cookie, _ := readReply(t, g, 0); errno != 0 || cookie != 10 {
		t.Fatalf("flush: errno %d cookie %d", errno, cookie)
	}
}

// TestRelayReconnect: a guest connection dies mid-request; the next one
// handshakes afresh on the same host session and sees every write the host
// acknowledged, and the host stream is not corrupted by the half request.
func TestRelayReconnect(t *testing.T) {
	dev := nbdtest.NewMemDevice(1 << 20)
	r := startRelay(t, dev, false)
	g1, _ := guest(t, r)
	block := bytes.Repeat([]byte{0xab}, 4096)
	go g1.Write(append(request(1, 1, 0, 4096), block...))
	if errno, _, _ := readReply(t, g1, 0); errno != 0 {
		t.Fatalf("write: errno %d", errno)
	}
	// Half a write: header and some of the payload, then the connection dies.
	g1.Write(append(request(1, 2, 8192, 4096), block[:100]...))
	g1.Close()

	g2, exp := guest(t, r)
	defer g2.Close()
	if exp.Size != 1<<20 {
		t.Fatalf("export after reconnect %+v", exp)
	}
	go g2.Write(request(0, 3, 0, 4096))
	if errno, cookie, got := readReply(t, g2, 4096); errno != 0 || cookie != 3 || !bytes.Equal(got, block) {
		t.Fatalf("read after reconnect: errno %d cookie %d", errno, cookie)
	}
	go g2.Write(request(0, 4, 8192, 4096))
	if errno, _, got := readReply(t, g2, 4096); errno != 0 || !bytes.Equal(got, make([]byte, 4096)) {
		t.Fatalf("the half write reached the disk (errno %d)", errno)
	}
}

func TestRelayReadOnlyExport(t *testing.T) {
	dev := nbdtest.NewMemDevice(65536)
	r := startRelay(t, dev, true)
	g, exp := guest(t, r)
	defer g.Close()
	if !exp.ReadOnly() {
		t.Fatalf("export %+v is not read-only", exp)
	}
	go g.Write(append(request(1, 5, 0, 512), make([]byte, 512)...))
	if errno, _, _ := readReply(t, g, 0); errno != 1 {
		t.Fatalf("write to a read-only export: errno %d, want EPERM", errno)
	}
}

func TestHandshakeRefused(t *testing.T) {
	srv, cli := net.Pipe()
	go nbd.Serve(context.Background(), srv, nbdtest.NewMemDevice(512), nbd.Options{Name: "root"})
	defer cli.Close()
	if _, err := nbd.ClientHandshake(cli, "other"); err == nil {
		t.Fatal("handshake for an unknown export succeeded")
	}
}
