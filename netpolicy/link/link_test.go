package link_test

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"io"
	"net"
	"testing"

	"github.com/torkbot/sandbox/netpolicy/link"
)

func TestReadFrame(t *testing.T) {
	frame := bytes.Repeat([]byte{0xab}, 60)
	var w bytes.Buffer
	if err := link.WriteFrame(&w, frame); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name    string
		in      []byte
		bufLen  int
		wantN   int
		wantErr error
	}{
		{"ok", w.Bytes(), 100, 60, nil},
		{"exact", w.Bytes(), 60, 60, nil},
		{"too large", w.Bytes(), 59, 0, link.ErrFrameTooLarge},
		{"huge length", []byte{0xff, 0xff, 0xff, 0xff}, 100, 0, link.ErrFrameTooLarge},
		{"empty", nil, 100, 0, io.EOF},
		{"short prefix", []byte{0, 0}, 100, 0, io.ErrUnexpectedEOF},
		{"short frame", w.Bytes()[:30], 100, 0, io.ErrUnexpectedEOF},
	} {
		t.Run(tc.name, func(t *testing.T) {
			n, err := link.ReadFrame(bytes.NewReader(tc.in), make([]byte, tc.bufLen))
			if !errors.Is(err, tc.wantErr) || n != tc.wantN {
				t.Fatalf("ReadFrame = %d, %v; want %d, %v", n, err, tc.wantN, tc.wantErr)
			}
		})
	}
}

func TestNewRejectsBadOptions(t *testing.T) {
	for _, o := range []link.Options{{MTU: 100, LinkAddress: "\x02\x00\x00\x00\x00\x01"}, {MTU: 70000, LinkAddress: "\x02\x00\x00\x00\x00\x01"}, {MTU: 1500, LinkAddress: "x"}} {
		if _, err := link.New(o); err == nil {
			t.Errorf("New(%+v) succeeded", o)
		}
	}
	if _, err := link.New(link.Options{MTU: 1500, LinkAddress: "\x02\x00\x00\x00\x00\x01"}); err != nil {
		t.Errorf("New: %v", err)
	}
}

// TestServeOversizedFrameEndsLink checks that a hostile length ends Serve
// with ErrFrameTooLarge and closes the stream.
func TestServeOversizedFrameEndsLink(t *testing.T) {
	ep, err := link.New(link.Options{MTU: 1500, LinkAddress: "\x02\x00\x00\x00\x00\x01"})
	if err != nil {
		t.Fatal(err)
	}
	host, guest := net.Pipe()
	errc := make(chan error, 1)
	go func() { errc <- ep.Serve(context.Background(), host) }()
	var hdr [4]byte
	binary.BigEndian.PutUint32(hdr[:], uint32(link.MaxFrameSize(1500)+1))
	guest.Write(hdr[:])
	if err := <-errc; !errors.Is(err, link.ErrFrameTooLarge) {
		t.Fatalf("Serve = %v, want ErrFrameTooLarge", err)
	}
	if _, err := guest.Read(make([]byte, 1)); err == nil {
		t.Fatal("stream still open")
	}
}

func TestServeEndsWithContext(t *testing.T) {
	ep, err := link.New(link.Options{MTU: 1500, LinkAddress: "\x02\x00\x00\x00\x00\x01"})
	if err != nil {
		t.Fatal(err)
	}
	host, guest := net.Pipe()
	defer guest.Close()
	ctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error, 1)
	go func() { errc <- ep.Serve(ctx, host) }()
	// A runt frame is dropped without ending the link.
	if err := link.WriteFrame(guest, []byte{1, 2, 3}); err != nil {
		t.Fatal(err)
	}
	cancel()
	if err := <-errc; !errors.Is(err, context.Canceled) {
		t.Fatalf("Serve = %v, want context.Canceled", err)
	}
}

func FuzzReadFrame(f *testing.F) {
	f.Add([]byte{0, 0, 0, 14, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 8, 0})
	f.Add([]byte{0xff, 0xff, 0xff, 0xff})
	f.Add([]byte{0, 0, 0, 1})
	f.Fuzz(func(t *testing.T, in []byte) {
		buf := make([]byte, link.MaxFrameSize(1500))
		r := bytes.NewReader(in)
		for {
			n, err := link.ReadFrame(r, buf)
			if err != nil {
				return
			}
			if n > len(buf) {
				t.Fatalf("frame of %d bytes exceeds buffer of %d", n, len(buf))
			}
		}
	})
}
