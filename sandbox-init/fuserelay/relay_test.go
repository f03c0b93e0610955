package fuserelay_test

import (
	"bytes"
	"encoding/binary"
	"errors"
	"io"
	"testing"

	"github.com/torkbot/sandbox/sandbox-init/fuserelay"
)

func reply(length uint32, body []byte) []byte {
	b := binary.NativeEndian.AppendUint32(nil, length)
	b = append(b, make([]byte, 12)...)
	return append(b, body...)
}

func TestReadReply(t *testing.T) {
	buf := make([]byte, 64)
	for _, tc := range []struct {
		name    string
		stream  []byte
		want    int
		wantErr error
	}{
		{"header only", reply(16, nil), 16, nil},
		{"with payload", reply(20, []byte("abcd")), 20, nil},
		{"too short", reply(15, nil), 0, fuserelay.ErrBadReply},
		{"too long", reply(65, make([]byte, 49)), 0, fuserelay.ErrBadReply},
		{"truncated payload", reply(32, []byte("ab")), 0, fuserelay.ErrBadReply},
		{"truncated header", []byte{1, 2, 3}, 0, fuserelay.ErrBadReply},
		{"end of stream", nil, 0, io.EOF},
	} {
		t.Run(tc.name, func(t *testing.T) {
			n, err := fuserelay.ReadReply(bytes.NewReader(tc.stream), buf)
			if n != tc.want || !errors.Is(err, tc.wantErr) {
				t.Errorf("ReadReply = %d, %v; want %d, %v", n, err, tc.want, tc.wantErr)
			}
		})
	}
}

func FuzzReadReply(f *testing.F) {
	f.Add(reply(16, nil))
	f.Add(reply(24, []byte("12345678")))
	f.Add(reply(0xffffffff, nil))
	f.Fuzz(func(t *testing.T, stream []byte) {
		buf := make([]byte, 4096)
		r := bytes.NewReader(stream)
		for {
			n, err := fuserelay.ReadReply(r, buf)
			if err != nil {
				return
			}
			if n < 16 || n > len(buf) || int(binary.NativeEndian.Uint32(buf)) != n {
				t.Fatalf("accepted a reply of %d bytes with length field %d", n, binary.NativeEndian.Uint32(buf))
			}
		}
	})
}
