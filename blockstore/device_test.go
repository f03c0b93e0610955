package blockstore_test

import (
	"bytes"
	"context"
	"errors"
	"math/rand/v2"
	"sync"
	"testing"

	"github.com/torkbot/sandbox/blockstore"
	"github.com/torkbot/sandbox/blockstore/memstore"
)

const bs = 4096

func randomBase(size int, seed uint64) []byte {
	rng := rand.New(rand.NewPCG(seed, 7))
	b := make([]byte, size)
	for i := range b {
		b[i] = byte(rng.Uint32())
	}
	return b
}

func open(t *testing.T, base []byte, st blockstore.Store, maxDirty int64) *blockstore.Device {
	t.Helper()
	return openOpts(t, base, st, blockstore.Options{MaxDirtyBytes: maxDirty})
}

func openOpts(t *testing.T, base []byte, st blockstore.Store, opts blockstore.Options) *blockstore.Device {
	t.Helper()
	d, err := blockstore.Open(context.Background(), bytes.NewReader(base), int64(len(base)), st, opts)
	if err != nil {
		t.Fatal(err)
	}
	return d
}

func readAll(t *testing.T, d *blockstore.Device) []byte {
	t.Helper()
	got := make([]byte, d.Size())
	if err := d.ReadAt(context.Background(), got, 0); err != nil {
		t.Fatal(err)
	}
	return got
}

// TestModel applies random writes, reads and flushes to a Device and a plain
// byte slice, and checks they agree, also after reopening from the store.
func TestModel(t *testing.T) {
	ctx := context.Background()
	for _, c := range []struct{ size, clean, blockSize int }{
		{64 * bs, 0, bs},
		{64*bs + 1000, 0, bs}, // a partial last block
		{64 * bs, 3 * bs, bs}, // cache eviction
		{64 * bs, -1, bs},     // no cache
		{64 * bs, 0, 1536},    // a multiple of 512 that is not a power of two
	} {
		size := c.size
		base := randomBase(size, 1)
		want := bytes.Clone(base)
		st := memstore.New(c.blockSize)
		d := openOpts(t, base, st, blockstore.Options{MaxDirtyBytes: 8 * bs, MaxCleanBytes: int64(c.clean)})
		rng := rand.New(rand.NewPCG(2, 3))
		for i := range 2000 {
			off := rng.IntN(size)
			n := rng.IntN(min(size-off, 3*bs)) + 1
			switch rng.IntN(5) {
			case 0, 1:
				p := randomBase(n, uint64(i))
				if err := d.WriteAt(ctx, p, int64(off)); err != nil {
					t.Fatal(err)
				}
				copy(want[off:], p)
			case 2, 3:
				p := make([]byte, n)
				if err := d.ReadAt(ctx, p, int64(off)); err != nil {
					t.Fatal(err)
				}
				if !bytes.Equal(p, want[off:off+n]) {
					t.Fatalf("op %d: read %d@%d differs", i, n, off)
				}
			case 4:
				if err := d.Flush(ctx); err != nil {
					t.Fatal(err)
				}
			}
			if d.Dirty() > 8*bs {
				t.Fatalf("dirty %d above the limit", d.Dirty())
			}
		}
		if err := d.Flush(ctx); err != nil {
			t.Fatal(err)
		}
		if got := readAll(t, d); !bytes.Equal(got, want) {
			t.Fatal("device differs from model")
		}
		for b, data := range st.Blocks() {
			if len(data) != c.blockSize {
				t.Fatalf("block %d has %d bytes", b, len(data))
			}
		}
		d2 := open(t, base, st, 0)
		if got := readAll(t, d2); !bytes.Equal(got, want) {
			t.Fatal("reopened device differs from model")
		}
	}
}

func TestLazyReads(t *testing.T) {
	ctx := context.Background()
	base := randomBase(16*bs, 1)
	st := memstore.New(bs)
	d := open(t, base, st, 0)
	if err := d.WriteAt(ctx, make([]byte, bs), 3*bs); err != nil {
		t.Fatal(err)
	}
	if err := d.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	d2 := open(t, base, st, 0)
	p := make([]byte, bs)
	if err := d2.ReadAt(ctx, p, 0); err != nil || st.Reads != 0 {
		t.Fatalf("unlisted read hit the store: err=%v reads=%d", err, st.Reads)
	}
	if err := d2.ReadAt(ctx, p, 3*bs); err != nil || st.Reads != 1 || !bytes.Equal(p, make([]byte, bs)) {
		t.Fatalf("listed read: err=%v reads=%d", err, st.Reads)
	}
}

func TestCleanCache(t *testing.T) {
	ctx := context.Background()
	base := randomBase(16*bs, 1)
	st := memstore.New(bs)
	d := open(t, base, st, 0)
	if err := d.WriteAt(ctx, bytes.Repeat([]byte{1}, 2*bs), 0); err != nil {
		t.Fatal(err)
	}
	if err := d.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	d2 := open(t, base, st, 0)
	p := make([]byte, 100)
	for range 3 {
		if err := d2.ReadAt(ctx, p, 10); err != nil {
			t.Fatal(err)
		}
	}
	if st.Reads != 1 {
		t.Fatalf("%d store reads for one cached block", st.Reads)
	}
	// Overwrite, flush, read: the cache must not serve the old content.
	if err := d2.WriteAt(ctx, bytes.Repeat([]byte{2}, 100), 10); err != nil {
		t.Fatal(err)
	}
	if err := d2.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	if err := d2.ReadAt(ctx, p, 10); err != nil || !bytes.Equal(p, bytes.Repeat([]byte{2}, 100)) {
		t.Fatalf("stale read after flush: %v", err)
	}
	got := make([]byte, 2*bs)
	if err := d2.ReadAt(ctx, got, 0); err != nil {
		t.Fatal(err)
	}
	want := bytes.Repeat([]byte{1}, 2*bs)
	copy(want[10:], bytes.Repeat([]byte{2}, 100))
	if !bytes.Equal(got, want) {
		t.Fatal("read after partial overwrite differs")
	}
}

func TestStoreAnswerValidated(t *testing.T) {
	ctx := context.Background()
	base := randomBase(16*bs, 1)
	st := memstore.New(bs)
	d := open(t, base, st, 0)
	if err := d.WriteAt(ctx, make([]byte, 4*bs), 4*bs); err != nil {
		t.Fatal(err)
	}
	if err := d.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	for name, hook := range map[string]func(uint64, int, []blockstore.Chunk) []blockstore.Chunk{
		"missing": func(_ uint64, _ int, c []blockstore.Chunk) []blockstore.Chunk { return c[1:] },
		"short":   func(_ uint64, _ int, c []blockstore.Chunk) []blockstore.Chunk { c[0].Data = c[0].Data[:10]; return c },
		"outside": func(_ uint64, _ int, c []blockstore.Chunk) []blockstore.Chunk {
			return append(c, blockstore.Chunk{Start: 9, Data: make([]byte, bs)})
		},
		"duplicate": func(_ uint64, _ int, c []blockstore.Chunk) []blockstore.Chunk { return append(c, c[0]) },
		"overlong": func(s uint64, _ int, c []blockstore.Chunk) []blockstore.Chunk {
			return []blockstore.Chunk{{Start: s, Data: make([]byte, 5*bs)}}
		},
		"empty": func(_ uint64, _ int, c []blockstore.Chunk) []blockstore.Chunk {
			return append(c, blockstore.Chunk{Start: 4})
		},
	} {
		t.Run(name, func(t *testing.T) {
			st.ReadHook = hook
			defer func() { st.ReadHook = nil }()
			d2 := open(t, base, st, 0)
			if err := d2.ReadAt(ctx, make([]byte, 4*bs), 4*bs); !errors.Is(err, blockstore.ErrBadStoreData) {
				t.Fatalf("ReadAt = %v, want ErrBadStoreData", err)
			}
		})
	}
	// One chunk holding all four blocks is valid.
	st.ReadHook = func(s uint64, n int, c []blockstore.Chunk) []blockstore.Chunk {
		var all []byte
		for _, x := range c {
			all = append(all, x.Data...)
		}
		return []blockstore.Chunk{{Start: s, Data: all}}
	}
	d2 := open(t, base, st, 0)
	if err := d2.ReadAt(ctx, make([]byte, 4*bs), 4*bs); err != nil {
		t.Fatal(err)
	}
}

type listStore struct {
	*memstore.Store
	list []uint64
}

func (l listStore) List(context.Context) ([]uint64, error) { return l.list, nil }

func TestOpenRefusesBadStore(t *testing.T) {
	base := make([]byte, 16*bs)
	if _, err := blockstore.Open(context.Background(), bytes.NewReader(base), int64(len(base)), listStore{memstore.New(bs), []uint64{16}}, blockstore.Options{}); !errors.Is(err, blockstore.ErrBadStoreData) {
		t.Fatalf("listed block past the end: %v", err)
	}
	for _, size := range []int{0, 100, 3000, 1 << 30} {
		if _, err := blockstore.Open(context.Background(), bytes.NewReader(base), int64(len(base)), memstore.New(size), blockstore.Options{}); !errors.Is(err, blockstore.ErrBlockSize) {
			t.Fatalf("block size %d: %v", size, err)
		}
	}
}

func TestNoGrowth(t *testing.T) {
	ctx := context.Background()
	base := make([]byte, 16*bs)
	d := open(t, base, memstore.New(bs), 0)
	for _, c := range []struct{ off, n int64 }{{16 * bs, 1}, {16*bs - 1, 2}, {-1, 1}, {1 << 62, 1 << 20}} {
		if err := d.WriteAt(ctx, make([]byte, c.n), c.off); !errors.Is(err, blockstore.ErrOutOfRange) {
			t.Fatalf("WriteAt(%d, %d) = %v", c.n, c.off, err)
		}
		if err := d.ReadAt(ctx, make([]byte, c.n), c.off); !errors.Is(err, blockstore.ErrOutOfRange) {
			t.Fatalf("ReadAt(%d, %d) = %v", c.n, c.off, err)
		}
	}
}

// TestFailedFlushKeepsEarlierState checks that a failed Write or Flush leaves
// the store at its previous flushed state and the device dirty, and that the
// next successful flush sends everything.
func TestFailedFlushKeepsEarlierState(t *testing.T) {
	ctx := context.Background()
	base := randomBase(16*bs, 1)
	st := memstore.New(bs)
	d := open(t, base, st, 0)
	one := bytes.Repeat([]byte{1}, bs)
	two := bytes.Repeat([]byte{2}, bs)
	if err := d.WriteAt(ctx, one, 0); err != nil {
		t.Fatal(err)
	}
	if err := d.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	for _, fail := range []struct{ write, flush bool }{{true, false}, {false, true}} {
		if err := d.WriteAt(ctx, two, 0); err != nil {
			t.Fatal(err)
		}
		if err := d.WriteAt(ctx, two, 5*bs); err != nil {
			t.Fatal(err)
		}
		st.Set(fail.write, fail.flush)
		if err := d.Flush(ctx); !errors.Is(err, memstore.ErrInjected) {
			t.Fatalf("Flush = %v", err)
		}
		st.Set(false, false)
		blocks := st.Blocks()
		if len(blocks) != 1 || !bytes.Equal(blocks[0], one) {
			t.Fatalf("store changed by a failed flush: %d blocks", len(blocks))
		}
		if d.Dirty() != 2*bs {
			t.Fatalf("dirty = %d after failed flush", d.Dirty())
		}
		reopened := readAll(t, open(t, base, st, 0))
		if !bytes.Equal(reopened[:bs], one) || !bytes.Equal(reopened[5*bs:6*bs], base[5*bs:6*bs]) {
			t.Fatal("reopened store does not show the earlier state")
		}
	}
	if err := d.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	if d.Dirty() != 0 {
		t.Fatalf("dirty = %d after flush", d.Dirty())
	}
	got := readAll(t, open(t, base, st, 0))
	if !bytes.Equal(got[:bs], two) || !bytes.Equal(got[5*bs:6*bs], two) {
		t.Fatal("retried flush did not reach the store")
	}
}

func TestEarlyWriteBack(t *testing.T) {
	ctx := context.Background()
	base := make([]byte, 64*bs)
	st := memstore.New(bs)
	d := open(t, base, st, 4*bs)
	for i := range 20 {
		if err := d.WriteAt(ctx, bytes.Repeat([]byte{byte(i + 1)}, bs), int64(i)*bs); err != nil {
			t.Fatal(err)
		}
		if d.Dirty() > 4*bs {
			t.Fatalf("dirty %d over the limit", d.Dirty())
		}
	}
	if st.Flushes == 0 {
		t.Fatal("no early write-back")
	}
	// A failing store: writes are refused once the limit is reached.
	st.Set(true, false)
	var err error
	for i := range 10 {
		if err = d.WriteAt(ctx, make([]byte, bs), int64(30+i)*bs); err != nil {
			break
		}
	}
	if !errors.Is(err, memstore.ErrInjected) || d.Dirty() > 4*bs {
		t.Fatalf("failing store: err=%v dirty=%d", err, d.Dirty())
	}
}

func TestConcurrent(t *testing.T) {
	ctx := context.Background()
	size := 256 * bs
	base := randomBase(size, 1)
	st := memstore.New(bs)
	d := open(t, base, st, 16*bs)
	want := bytes.Clone(base)
	var wg sync.WaitGroup
	var mu sync.Mutex
	for w := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rng := rand.New(rand.NewPCG(uint64(w), 9))
			// Each writer owns the bytes congruent to w mod 8 in 512-byte
			// units, so writers share blocks but not bytes.
			for range 300 {
				unit := rng.IntN(size/512/8)*8 + w
				p := randomBase(512, rng.Uint64())
				if err := d.WriteAt(ctx, p, int64(unit*512)); err != nil {
					t.Error(err)
					return
				}
				mu.Lock()
				copy(want[unit*512:], p)
				mu.Unlock()
				if rng.IntN(20) == 0 {
					if err := d.Flush(ctx); err != nil {
						t.Error(err)
						return
					}
				}
				if err := d.ReadAt(ctx, make([]byte, 3*bs), int64(rng.IntN(size-3*bs))); err != nil {
					t.Error(err)
					return
				}
			}
		}()
	}
	wg.Wait()
	if err := d.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(readAll(t, d), want) || !bytes.Equal(readAll(t, open(t, base, st, 0)), want) {
		t.Fatal("concurrent writes lost")
	}
}

// slowWriteStore's Write returns only once told to, whatever its context.
type slowWriteStore struct {
	*memstore.Store
	release chan struct{}
	flushes int
}

func (s *slowWriteStore) Write(ctx context.Context, chunks []blockstore.Chunk) error {
	<-s.release
	return s.Store.Write(context.WithoutCancel(ctx), chunks)
}

func (s *slowWriteStore) Flush(ctx context.Context) error {
	s.flushes++
	return s.Store.Flush(ctx)
}

// TestLateWriteIsNotFlushed: a Write that returns after its caller gave up
// (the lane closed without waiting) is not followed by the Flush that would
// make it durable.
func TestLateWriteIsNotFlushed(t *testing.T) {
	const bs = 512
	base := randomBase(8*bs, 5)
	st := &slowWriteStore{Store: memstore.New(bs), release: make(chan struct{})}
	d := open(t, base, st, 0)
	if err := d.WriteAt(context.Background(), bytes.Repeat([]byte{1}, bs), 0); err != nil {
		t.Fatal(err)
	}
	ctx, giveUp := context.WithCancel(context.Background())
	done := make(chan error)
	go func() { done <- d.Flush(ctx) }()
	giveUp()
	close(st.release)
	if err := <-done; !errors.Is(err, context.Canceled) {
		t.Fatalf("flush after giving up: %v, want context.Canceled", err)
	}
	if st.flushes != 0 || len(st.Blocks()) != 0 {
		t.Fatalf("%d store flushes, %d durable blocks after a late write: want none", st.flushes, len(st.Blocks()))
	}
}
