package control

import (
	"bytes"
	"encoding/binary"
	"errors"
	"io"
	"testing"
)

// FuzzGuard checks the guard against a plain reading of the frames: what
// yamux gets is the input's frames in order, without PINGs, up to the first
// SYN, and DATA payloads whole (the last one maybe cut by EOF).
func FuzzGuard(f *testing.F) {
	frame := func(typ byte, flags uint16, stream, length uint32, payload string) []byte {
		h := make([]byte, yamuxHeaderSize, yamuxHeaderSize+len(payload))
		h[1] = typ
		binary.BigEndian.PutUint16(h[2:], flags)
		binary.BigEndian.PutUint32(h[4:], stream)
		binary.BigEndian.PutUint32(h[8:], length)
		return append(h, payload...)
	}
	f.Add(uint8(7), joinFrames(frame(2, 1, 0, 9, ""), frame(0, 2, 1, 3, "abc"), frame(1, 0, 1, 1<<20, ""), frame(2, 2, 0, 1, "")))
	f.Add(uint8(1), joinFrames(frame(0, 0, 1, 5, "ab"), frame(2, 1, 0, 0, "")))
	f.Add(uint8(64), joinFrames(frame(1, 0, 3, 0, ""), frame(1, 1, 2, 0, ""), frame(0, 0, 3, 0, "")))
	f.Add(uint8(12), joinFrames(frame(3, 0, 0, 0, ""), []byte{1, 2, 3}))
	f.Fuzz(func(t *testing.T, readSize uint8, in []byte) {
		g := newGuard(struct {
			io.Reader
			io.Writer
			io.Closer
		}{bytes.NewReader(in), io.Discard, io.NopCloser(nil)})
		var got []byte
		buf := make([]byte, int(readSize)+1)
		var err error
		for err == nil {
			var n int
			n, err = g.Read(buf)
			got = append(got, buf[:n]...)
		}

		var want []byte
		var wantErr error
		rest := in
		for len(rest) >= yamuxHeaderSize {
			hdr := rest[:yamuxHeaderSize]
			rest = rest[yamuxHeaderSize:]
			if hdr[0] == 0 && hdr[1] == yamuxTypePing {
				continue
			}
			if hdr[0] == 0 && binary.BigEndian.Uint16(hdr[2:])&yamuxFlagSYN != 0 {
				wantErr = ErrProtocol
				break
			}
			want = append(want, hdr...)
			if hdr[0] == 0 && hdr[1] == yamuxTypeData {
				n := min(uint64(len(rest)), uint64(binary.BigEndian.Uint32(hdr[8:])))
				want = append(want, rest[:n]...)
				rest = rest[n:]
			}
		}
		if !bytes.Equal(got, want) {
			t.Fatalf("guard passed %x, want %x", got, want)
		}
		switch {
		case wantErr != nil && !errors.Is(err, wantErr):
			t.Fatalf("guard ended with %v, want %v", err, wantErr)
		case wantErr == nil && !errors.Is(err, io.EOF) && !errors.Is(err, io.ErrUnexpectedEOF):
			t.Fatalf("guard ended with %v, want EOF", err)
		}
	})
}

func joinFrames(frames ...[]byte) []byte { return bytes.Join(frames, nil) }
