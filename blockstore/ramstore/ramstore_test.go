package ramstore_test

import (
	"bytes"
	"context"
	"errors"
	"testing"

	"github.com/torkbot/sandbox/blockstore"
	"github.com/torkbot/sandbox/blockstore/ramstore"
)

const bs = 4096

// TestDeviceBounded drives a Device over a Store as the ephemeral root does:
// writes past the Store's bound plus the Device's dirty bound fail, host
// memory stays within both, and what was written before reads back.
func TestDeviceBounded(t *testing.T) {
	ctx := context.Background()
	const size, maxStore, maxDirty = 1 << 20, 256 << 10, 64 << 10
	base := bytes.NewReader(make([]byte, size))
	store := ramstore.New(bs, maxStore)
	dev, err := blockstore.Open(ctx, base, size, store, blockstore.Options{MaxDirtyBytes: maxDirty, MaxCleanBytes: -1})
	if err != nil {
		t.Fatal(err)
	}
	block := func(i int) []byte { return bytes.Repeat([]byte{byte(i + 1)}, bs) }
	written := 0
	for i := 0; i < size/bs; i++ {
		if err := dev.WriteAt(ctx, block(i), int64(i)*bs); err != nil {
			if !errors.Is(err, ramstore.ErrFull) {
				t.Fatalf("write %d: %v, want ErrFull", i, err)
			}
			break
		}
		written++
		if store.Bytes() > maxStore || dev.Dirty() > maxDirty {
			t.Fatalf("after %d writes: store %d, dirty %d bytes", written, store.Bytes(), dev.Dirty())
		}
	}
	if written*bs != maxStore+maxDirty {
		t.Fatalf("%d bytes written before the first failure, want %d", written*bs, maxStore+maxDirty)
	}
	if err := dev.Flush(ctx); !errors.Is(err, ramstore.ErrFull) {
		t.Fatalf("flush of a full store: %v, want ErrFull", err)
	}
	// What was written, held or still dirty, reads back.
	last := written - 1
	got := make([]byte, bs)
	for _, i := range []int{0, 1, last} {
		if err := dev.ReadAt(ctx, got, int64(i)*bs); err != nil {
			t.Fatal(err)
		}
		if want := block(i); !bytes.Equal(got, want) {
			t.Fatalf("block %d reads %d, want %d", i, got[0], want[0])
		}
	}
}

// TestWriteAllOrNothing: a Write that does not fit changes nothing.
func TestWriteAllOrNothing(t *testing.T) {
	ctx := context.Background()
	s := ramstore.New(bs, 2*bs)
	if err := s.Write(ctx, []blockstore.Chunk{{Start: 0, Data: make([]byte, bs)}}); err != nil {
		t.Fatal(err)
	}
	err := s.Write(ctx, []blockstore.Chunk{{Start: 0, Data: bytes.Repeat([]byte{7}, bs)}, {Start: 5, Data: make([]byte, 2*bs)}})
	if !errors.Is(err, ramstore.ErrFull) {
		t.Fatalf("write past the bound: %v", err)
	}
	chunks, err := s.Read(ctx, 0, 1)
	if err != nil || chunks[0].Data[0] != 0 || s.Bytes() != bs {
		t.Fatalf("a refused write changed the store: %v, %d bytes", err, s.Bytes())
	}
	if _, err := s.Read(ctx, 5, 1); err == nil {
		t.Fatal("read of a block never written succeeded")
	}
}
