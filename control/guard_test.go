package control_test

import (
	"context"
	"encoding/binary"
	"errors"
	"runtime"
	"testing"
	"time"

	"github.com/torkbot/sandbox/control"
	"github.com/torkbot/sandbox/internal/testutil"
)

// yamuxFrame is a raw yamux frame header as a hostile guest writes it.
func yamuxFrame(typ byte, flags uint16, stream, length uint32) []byte {
	h := make([]byte, 12)
	h[1] = typ
	binary.BigEndian.PutUint16(h[2:], flags)
	binary.BigEndian.PutUint32(h[4:], stream)
	binary.BigEndian.PutUint32(h[8:], length)
	return h
}

// hostCost is what the host process holds: goroutines, and heap plus
// goroutine stacks in bytes.
func hostCost() (goroutines int, bytes uint64) {
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return runtime.NumGoroutine(), m.HeapInuse + m.StackInuse
}

// A guest that floods PING+SYN and never reads must not grow the host: each
// ping used to cost a goroutine waiting 30 s to send its reply.
func TestGuestPingFloodIsBounded(t *testing.T) {
	host, guestEnd := testutil.ConnPair(t)
	defer guestEnd.Close()
	baseGoroutines, baseBytes := hostCost()

	c, err := control.NewClient(host)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	handshake := make(chan error, 1)
	go func() {
		_, err := c.Handshake(ctx, control.Setup{})
		handshake <- err
	}()

	const pings = 200_000 // 2.4 MB, what the review sent
	flood := make([]byte, 0, pings*12)
	for i := range pings {
		flood = append(flood, yamuxFrame(2, 1, 0, uint32(i))...)
	}
	guestEnd.SetWriteDeadline(time.Now().Add(time.Minute))
	if _, err := guestEnd.Write(flood); err != nil {
		t.Fatalf("host stopped reading the pings: %v", err)
	}
	flood = nil
	time.Sleep(500 * time.Millisecond) // the host reads what the socket holds

	goroutines, bytes := hostCost()
	t.Logf("after %d pings: %+d goroutines, %+.1f MiB heap+stacks", pings,
		goroutines-baseGoroutines, float64(int64(bytes)-int64(baseBytes))/(1<<20))
	if goroutines > baseGoroutines+16 {
		t.Errorf("host has %d goroutines after the ping flood, %d before", goroutines, baseGoroutines)
	}
	if bytes > baseBytes+16<<20 {
		t.Errorf("host holds %d MiB after the ping flood, %d MiB before", bytes>>20, baseBytes>>20)
	}
	select {
	case err := <-handshake:
		t.Fatalf("pings ended the handshake: %v", err)
	default:
	}

	// A guest opening a stream ends the session: the host accepts none.
	if _, err := guestEnd.Write(yamuxFrame(1, 1, 2, 0)); err != nil {
		t.Fatal(err)
	}
	select {
	case <-c.Done():
	case <-time.After(10 * time.Second):
		t.Fatal("the session survived a stream opened by the guest")
	}
	if err := <-handshake; !errors.Is(err, control.ErrProtocol) || !errors.Is(err, control.ErrSessionLost) {
		t.Errorf("Handshake: %v, want ErrSessionLost and ErrProtocol", err)
	}
}
