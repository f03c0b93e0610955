package eventstore_test

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/torkbot/sandbox/blockstore"
	"github.com/torkbot/sandbox/blockstore/eventstore"
	"github.com/torkbot/sandbox/blockstore/memstore"
	"github.com/torkbot/sandbox/native/protocol"
)

const bs = 4096

// jsSide plays src/block-store-events.ts over a memstore: it decodes the
// events as the JavaScript side does and encodes the answers, unless
// readAnswer overrides the answer of a read.
type jsSide struct {
	st         *memstore.Store
	readAnswer func(start uint64, count uint32) []byte
	listAnswer []byte
	events     []string
}

func (j *jsSide) Call(ctx context.Context, event string, p []byte) ([]byte, error) {
	j.events = append(j.events, event)
	switch event {
	case protocol.EventBlockList:
		if j.listAnswer != nil {
			return j.listAnswer, nil
		}
		list, _ := j.st.List(ctx)
		var out []byte
		for _, b := range list {
			out = binary.BigEndian.AppendUint64(out, b)
		}
		return out, nil
	case protocol.EventBlockRead:
		start, count := binary.BigEndian.Uint64(p), binary.BigEndian.Uint32(p[8:])
		if j.readAnswer != nil {
			return j.readAnswer(start, count), nil
		}
		chunks, err := j.st.Read(ctx, start, int(count))
		if err != nil {
			return nil, err
		}
		return encodeChunks(chunks), nil
	case protocol.EventBlockWrite:
		n := int(binary.BigEndian.Uint32(p))
		data := p[4+12*n:]
		var chunks []blockstore.Chunk
		for i := range n {
			h := p[4+12*i:]
			l := binary.BigEndian.Uint32(h[8:])
			chunks = append(chunks, blockstore.Chunk{Start: binary.BigEndian.Uint64(h), Data: data[:l]})
			data = data[l:]
		}
		return nil, j.st.Write(ctx, chunks)
	case protocol.EventBlockFlush:
		return nil, j.st.Flush(ctx)
	}
	return nil, errors.New("unknown event")
}

func encodeChunks(chunks []blockstore.Chunk) []byte {
	var out []byte
	for _, c := range chunks {
		out = binary.BigEndian.AppendUint64(out, c.Start)
		out = binary.BigEndian.AppendUint32(out, uint32(len(c.Data)))
		out = append(out, c.Data...)
	}
	return out
}

// TestDeviceOverEvents: a Device over the event framing persists writes
// into the store behind it, and a second Device reads them back lazily.
func TestDeviceOverEvents(t *testing.T) {
	ctx := context.Background()
	base := make([]byte, 64*bs)
	js := &jsSide{st: memstore.New(bs)}
	d, err := blockstore.Open(ctx, bytes.NewReader(base), int64(len(base)), eventstore.New(js, bs), blockstore.Options{})
	if err != nil {
		t.Fatal(err)
	}
	want := bytes.Repeat([]byte("lane"), 3*bs/4)
	if err := d.WriteAt(ctx, want, 5*bs+100); err != nil {
		t.Fatal(err)
	}
	if err := d.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	if got := len(js.st.Blocks()); got != 4 {
		t.Fatalf("store holds %d blocks, want 4", got)
	}
	js2 := &jsSide{st: js.st}
	d2, err := blockstore.Open(ctx, bytes.NewReader(base), int64(len(base)), eventstore.New(js2, bs), blockstore.Options{})
	if err != nil {
		t.Fatal(err)
	}
	got := make([]byte, len(want))
	if err := d2.ReadAt(ctx, got, 5*bs+100); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want) {
		t.Fatal("second device reads different data")
	}
	if strings.Join(js2.events, ",") != "block-list,block-read" {
		t.Fatalf("events %v, want one list and one read of the run", js2.events)
	}
}

// TestBadAnswers: every way a store can answer wrongly is an error naming
// it, and wraps blockstore.ErrBadStoreData.
func TestBadAnswers(t *testing.T) {
	block := func(start uint64, n int) []byte {
		return encodeChunks([]blockstore.Chunk{{Start: start, Data: make([]byte, n)}})
	}
	for _, c := range []struct {
		name   string
		answer func(start uint64, count uint32) []byte
		want   string
	}{
		{"truncated header", func(uint64, uint32) []byte { return []byte{0, 0, 0} }, "too short for a chunk header"},
		{"length past the end", func(s uint64, _ uint32) []byte { return block(s, bs)[:100] }, "88 left"},
		{"partial block", func(s uint64, _ uint32) []byte { return block(s, 1000) }, "not a whole number of blocks"},
		{"empty chunk", func(s uint64, _ uint32) []byte { return append(block(s, 0), block(s, bs)...) }, "not a whole number of blocks"},
		{"outside the range", func(s uint64, _ uint32) []byte { return block(s+1, bs) }, "outside the range"},
		{"too many blocks", func(s uint64, _ uint32) []byte { return block(s, 2*bs) }, "outside the range"},
		{"twice", func(s uint64, _ uint32) []byte { return append(block(s, bs), block(s, bs)...) }, "twice"},
		{"missing", func(uint64, uint32) []byte { return nil }, "did not return block 3"},
	} {
		t.Run(c.name, func(t *testing.T) {
			st := eventstore.New(&jsSide{readAnswer: c.answer}, bs)
			_, err := st.Read(context.Background(), 3, 1)
			if !errors.Is(err, blockstore.ErrBadStoreData) || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("got %v, want an ErrBadStoreData saying %q", err, c.want)
			}
		})
	}
	if _, err := eventstore.New(&jsSide{listAnswer: []byte{1, 2, 3}}, bs).List(context.Background()); !errors.Is(err, blockstore.ErrBadStoreData) {
		t.Fatalf("list answer of 3 bytes: %v", err)
	}
	// Listed blocks beyond the disk are refused when the device opens.
	over := binary.BigEndian.AppendUint64(nil, 64)
	_, err := blockstore.Open(context.Background(), bytes.NewReader(make([]byte, 64*bs)), 64*bs, eventstore.New(&jsSide{listAnswer: over}, bs), blockstore.Options{})
	if !errors.Is(err, blockstore.ErrBadStoreData) {
		t.Fatalf("listed block 64 of 64: %v", err)
	}
}

// blockingCaller answers writes only when released, to show a write is not
// abandoned when its context ends.
type blockingCaller struct {
	release chan struct{}
	mu      sync.Mutex
	done    bool
}

func (b *blockingCaller) Call(ctx context.Context, event string, _ []byte) ([]byte, error) {
	select {
	case <-b.release:
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	b.mu.Lock()
	b.done = true
	b.mu.Unlock()
	return nil, nil
}

func TestWriteNotAbandoned(t *testing.T) {
	c := &blockingCaller{release: make(chan struct{})}
	ctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error, 1)
	go func() {
		errc <- eventstore.New(c, bs).Write(ctx, []blockstore.Chunk{{Start: 1, Data: make([]byte, bs)}})
	}()
	cancel()
	select {
	case err := <-errc:
		t.Fatalf("write returned before the store answered: %v", err)
	case <-time.After(50 * time.Millisecond):
	}
	close(c.release)
	if err := <-errc; err != nil {
		t.Fatal(err)
	}
	if !c.done {
		t.Fatal("store never answered")
	}
}

func TestStoreErrorsNamed(t *testing.T) {
	st := memstore.New(bs)
	st.Set(true, false)
	err := eventstore.New(&jsSide{st: st}, bs).Write(context.Background(), []blockstore.Chunk{{Start: 0, Data: make([]byte, bs)}})
	if !errors.Is(err, memstore.ErrInjected) || !strings.Contains(err.Error(), "write() failed") {
		t.Fatalf("got %v", err)
	}
	if err := eventstore.New(&jsSide{st: st}, bs).Write(context.Background(), []blockstore.Chunk{{Start: 0, Data: make([]byte, 10)}}); err == nil {
		t.Fatal("partial block sent")
	}
}
