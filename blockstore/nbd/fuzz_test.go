package nbd

import (
	"bytes"
	"context"
	"encoding/binary"
	"io"
	"testing"

	"github.com/torkbot/sandbox/blockstore/nbd/nbdtest"

	"github.com/torkbot/sandbox/blockstore/nbd/wire"
)

func req(typ, flags uint16, off uint64, length uint32) []byte {
	b := binary.BigEndian.AppendUint32(nil, wire.RequestMagic)
	b = binary.BigEndian.AppendUint16(b, flags)
	b = binary.BigEndian.AppendUint16(b, typ)
	b = binary.BigEndian.AppendUint64(b, 42)
	b = binary.BigEndian.AppendUint64(b, off)
	return binary.BigEndian.AppendUint32(b, length)
}

func opt(o uint32, data []byte) []byte {
	b := binary.BigEndian.AppendUint64(nil, wire.OptMagic)
	b = binary.BigEndian.AppendUint32(b, o)
	b = binary.BigEndian.AppendUint32(b, uint32(len(data)))
	return append(b, data...)
}

func seedSession() []byte {
	s := binary.BigEndian.AppendUint32(nil, wire.FlagFixedNewstyle|wire.FlagNoZeroes)
	s = append(s, opt(wire.OptList, nil)...)
	s = append(s, opt(99, []byte("x"))...)
	s = append(s, opt(wire.OptInfo, []byte{0, 0, 0, 0, 0, 1, 0, 3})...)
	s = append(s, opt(wire.OptGo, []byte{0, 0, 0, 0, 0, 0})...)
	s = append(s, req(wire.CmdWrite, wire.CmdFlagFUA, 512, 4)...)
	s = append(s, 1, 2, 3, 4)
	s = append(s, req(wire.CmdRead, 0, 0, 1024)...)
	s = append(s, req(wire.CmdWriteZeroes, 0, 100, 100)...)
	s = append(s, req(wire.CmdTrim, 0, 0, 4096)...)
	s = append(s, req(wire.CmdRead, 0, 1<<20-1, 2)...)
	s = append(s, req(wire.CmdFlush, 0, 0, 0)...)
	return append(s, req(wire.CmdDisc, 0, 0, 0)...)
}

// FuzzServe feeds arbitrary client bytes to the server: it must never panic,
// never touch the device outside its size, and always stop.
func FuzzServe(f *testing.F) {
	f.Add(seedSession())
	old := binary.BigEndian.AppendUint32(nil, wire.FlagFixedNewstyle)
	f.Add(append(old, opt(wire.OptExportName, nil)...))
	f.Add(append(bytes.Clone(old), opt(wire.OptAbort, nil)...))
	f.Fuzz(func(t *testing.T, data []byte) {
		dev := nbdtest.NewMemDevice(1 << 20)
		rw := struct {
			io.Reader
			io.Writer
		}{bytes.NewReader(data), io.Discard}
		for _, ro := range []bool{false, true} {
			rw.Reader = bytes.NewReader(data)
			serve(context.Background(), rw, dev, Options{Name: "root", ReadOnly: ro})
		}
	})
}

// FuzzRequest checks that a request that passes check stays inside the export.
func FuzzRequest(f *testing.F) {
	f.Add(req(wire.CmdRead, 0, 0, 512), uint64(1<<20))
	f.Add(req(wire.CmdWrite, 1, 1<<63, 1<<31), uint64(1<<20))
	f.Fuzz(func(t *testing.T, b []byte, size uint64) {
		if len(b) != wire.RequestSize {
			return
		}
		r, err := wire.ParseRequest(b)
		if err != nil {
			return
		}
		if check(r, size, false) != 0 && r.Type != wire.CmdFlush {
			return
		}
		if r.Type != wire.CmdFlush && (r.Offset > size || r.Offset+uint64(r.Length) > size || r.Offset+uint64(r.Length) < r.Offset) {
			t.Fatalf("request %+v passed for size %d", r, size)
		}
		if (r.Type == wire.CmdRead || r.Type == wire.CmdWrite) && r.Length > MaxPayload {
			t.Fatalf("oversized request %+v passed", r)
		}
	})
}

func TestSeedSessionServes(t *testing.T) {
	dev := nbdtest.NewMemDevice(1 << 20)
	var out bytes.Buffer
	rw := struct {
		io.Reader
		io.Writer
	}{bytes.NewReader(seedSession()), &out}
	if err := serve(context.Background(), rw, dev, Options{Name: "root"}); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(dev.Bytes(512, 4), []byte{1, 2, 3, 4}) {
		t.Fatal("write not applied")
	}
	// FUA write, FLUSH and DISC each flush the device.
	if dev.Flushes() != 3 {
		t.Fatalf("device flushed %d times, want 3", dev.Flushes())
	}
	// Replies: every option answered, then one simple reply per request
	// except DISC; the READ past the end gets EINVAL and no data.
	if !bytes.Contains(out.Bytes(), []byte{0x67, 0x44, 0x66, 0x98, 0, 0, 0, wire.ErrInval}) {
		t.Fatal("no EINVAL reply for the read past the end")
	}
}
