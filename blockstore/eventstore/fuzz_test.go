package eventstore_test

import (
	"context"
	"encoding/binary"
	"testing"

	"github.com/torkbot/sandbox/blockstore/eventstore"
)

// answers replies to every event with the same bytes.
type answers []byte

func (a answers) Call(context.Context, string, []byte) ([]byte, error) { return a, nil }

// FuzzAnswers: whatever a store answers list() and read() with, the Store
// returns an error or exactly what its contract promises a Device: block
// indices, and for a read every block of the range once, as whole blocks.
func FuzzAnswers(f *testing.F) {
	const size = 16 // a small block size, so that the fuzzer finds whole blocks
	chunk := func(start uint64, n int) []byte {
		b := binary.BigEndian.AppendUint64(nil, start)
		b = binary.BigEndian.AppendUint32(b, uint32(n))
		return append(b, make([]byte, n)...)
	}
	f.Add(uint64(4), uint8(2), chunk(4, 2*size))
	f.Add(uint64(4), uint8(2), append(chunk(5, size), chunk(4, size)...))
	f.Add(uint64(4), uint8(2), append(chunk(4, size), chunk(4, size)...))
	f.Add(uint64(0), uint8(1), chunk(0, size+1))
	f.Add(uint64(1<<63), uint8(3), []byte{0, 0, 0})
	f.Fuzz(func(t *testing.T, start uint64, count uint8, answer []byte) {
		s := eventstore.New(answers(answer), size)
		if list, err := s.List(context.Background()); err == nil && len(list) != len(answer)/8 {
			t.Fatalf("list of %d indices from %d bytes", len(list), len(answer))
		}
		if count == 0 || start > 1<<62 {
			return
		}
		chunks, err := s.Read(context.Background(), start, int(count))
		if err != nil {
			return
		}
		seen := make([]bool, count)
		for _, c := range chunks {
			if len(c.Data) == 0 || len(c.Data)%size != 0 || c.Start < start {
				t.Fatalf("chunk of %d bytes at %d", len(c.Data), c.Start)
			}
			for i := c.Start - start; i < c.Start-start+uint64(len(c.Data)/size); i++ {
				if i >= uint64(count) || seen[i] {
					t.Fatalf("block %d outside the range or twice", start+i)
				}
				seen[i] = true
			}
		}
		for i, ok := range seen {
			if !ok {
				t.Fatalf("block %d missing", start+uint64(i))
			}
		}
	})
}
