package nbdrelay_test

import (
	"context"
	"io"
	"net"
	"testing"
	"time"

	"github.com/torkbot/sandbox/blockstore/nbd/nbdtest"
)

// FuzzServeGuest feeds arbitrary guest bytes (handshake and requests) to a
// relay in front of a real NBD server: the relay must neither panic nor
// hang, and must keep the host session usable for the next guest.
func FuzzServeGuest(f *testing.F) {
	hello := []byte{0, 0, 0, 3}
	goOpt := append([]byte("IHAVEOPT"), 0, 0, 0, 7, 0, 0, 0, 10, 0, 0, 0, 4, 'r', 'o', 'o', 't', 0, 0)
	f.Add(append(append([]byte{}, hello...), goOpt...))
	f.Add(append(append(append([]byte{}, hello...), goOpt...), request(0, 1, 0, 512)...))
	f.Add(append(append(append([]byte{}, hello...), goOpt...), request(1, 1, 0, 4)...))
	f.Add(append(append(append([]byte{}, hello...), goOpt...), request(2, 1, 0, 0)...))
	f.Add(append(append([]byte{}, hello...), []byte("IHAVEOPT\x00\x00\x00\x01\x00\x00\x00\x00")...))
	f.Fuzz(func(t *testing.T, in []byte) {
		r := startRelay(t, nbdtest.NewMemDevice(65536), false)
		g, relaySide := net.Pipe()
		done := make(chan struct{})
		go func() {
			defer close(done)
			r.ServeGuest(context.Background(), relaySide)
		}()
		go io.Copy(io.Discard, g)
		g.SetWriteDeadline(time.Now().Add(2 * time.Second))
		g.Write(in)
		g.Close()
		select {
		case <-done:
		case <-time.After(5 * time.Second):
			t.Fatal("ServeGuest did not return after the guest closed")
		}
		// The host session still answers a well-formed guest.
		g2, _ := guest(t, r)
		defer g2.Close()
		go g2.Write(request(3, 42, 0, 0))
		if errno, cookie, _ := readReply(t, g2, 0); errno != 0 || cookie != 42 {
			t.Fatalf("host session broken after fuzz input: errno %d cookie %d", errno, cookie)
		}
	})
}
