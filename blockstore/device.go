package blockstore

import (
	"context"
	"fmt"
	"io"
	"slices"
	"sync"
)

// Defaults for Options fields left 0.
const (
	DefaultMaxDirtyBytes = 64 << 20
	DefaultMaxCleanBytes = 32 << 20
)

// Block sizes a store may use: any multiple of MinBlockSize (the JS API's
// contract) up to MaxBlockSize, which bounds the memory one block pins.
const (
	MinBlockSize = 512
	MaxBlockSize = 16 << 20
)

// Options configures a Device.
type Options struct {
	// MaxDirtyBytes bounds dirty memory: a WriteAt that would exceed it
	// first writes every dirty block back to the store (Write + Flush), and
	// fails without writing if that fails. 0 means DefaultMaxDirtyBytes.
	MaxDirtyBytes int64
	// MaxCleanBytes bounds the cache of blocks read from the store, so a
	// block is not fetched again on every read. 0 means
	// DefaultMaxCleanBytes; negative disables the cache.
	MaxCleanBytes int64
}

// Device is the copy-on-write disk. Its methods are safe for concurrent use.
type Device struct {
	base      io.ReaderAt
	size      int64
	store     Store
	bs        int64
	nblocks   uint64
	maxDirty  int64
	maxClean  int64
	flushMu   sync.Mutex // serialises flushes so the store sees Write, Flush, Write, Flush...
	mu        sync.Mutex // guards the fields below
	inStore   map[uint64]bool
	dirty     map[uint64]*dirtyBlock
	dirtySize int64
	gen       uint64
	epoch     uint64            // bumped whenever a flush marks blocks clean
	clean     map[uint64][]byte // cache of store blocks that are not dirty
	cleanSize int64
}

type dirtyBlock struct {
	data []byte
	gen  uint64 // bumped on every change, to tell if a flushed copy is stale
}

// Open lists the store's blocks and returns a Device of size bytes over base.
// The store's blocks must all lie inside the device.
func Open(ctx context.Context, base io.ReaderAt, size int64, store Store, opts Options) (*Device, error) {
	bs := int64(store.BlockSize())
	if bs < MinBlockSize || bs > MaxBlockSize || bs%MinBlockSize != 0 {
		return nil, fmt.Errorf("%w: %d (want a multiple of %d up to %d)", ErrBlockSize, bs, MinBlockSize, MaxBlockSize)
	}
	if size < 0 {
		return nil, fmt.Errorf("blockstore: negative size %d", size)
	}
	d := &Device{
		base:     base,
		size:     size,
		store:    store,
		bs:       bs,
		nblocks:  uint64((size + bs - 1) / bs),
		maxDirty: opts.MaxDirtyBytes,
		maxClean: opts.MaxCleanBytes,
		clean:    make(map[uint64][]byte),
		inStore:  make(map[uint64]bool),
		dirty:    make(map[uint64]*dirtyBlock),
	}
	if d.maxDirty <= 0 {
		d.maxDirty = DefaultMaxDirtyBytes
	}
	if d.maxClean == 0 {
		d.maxClean = DefaultMaxCleanBytes
	}
	list, err := store.List(ctx)
	if err != nil {
		return nil, fmt.Errorf("cannot list store blocks: %w", err)
	}
	for _, b := range list {
		if b >= d.nblocks {
			return nil, fmt.Errorf("%w: listed block %d, device has %d blocks", ErrBadStoreData, b, d.nblocks)
		}
		d.inStore[b] = true
	}
	return d, nil
}

// Size returns the device size in bytes.
func (d *Device) Size() int64 { return d.size }

// BlockSize returns the store's block size.
func (d *Device) BlockSize() int { return int(d.bs) }

// Dirty returns the number of dirty bytes held in memory.
func (d *Device) Dirty() int64 {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.dirtySize
}

func (d *Device) checkRange(n int, off int64) error {
	if off < 0 || off > d.size || int64(n) > d.size-off {
		return fmt.Errorf("%w: %d bytes at %d, size %d", ErrOutOfRange, n, off, d.size)
	}
	return nil
}

// ReadAt reads len(p) bytes at off. The range must lie inside the device.
// Each block comes from, in order: dirty memory, the clean cache, the store
// (if listed at Open or flushed since), the base.
func (d *Device) ReadAt(ctx context.Context, p []byte, off int64) error {
	if err := d.checkRange(len(p), off); err != nil {
		return err
	}
	for len(p) > 0 {
		b := uint64(off / d.bs)
		within := off % d.bs
		n := min(int64(len(p)), d.bs-within)
		d.mu.Lock()
		var src []byte
		if db := d.dirty[b]; db != nil {
			src = db.data
		} else {
			src = d.clean[b]
		}
		if src != nil {
			copy(p[:n], src[within:])
			d.mu.Unlock()
			p, off = p[n:], off+n
			continue
		}
		in, epoch := d.inStore[b], d.epoch
		d.mu.Unlock()
		if !in {
			if err := d.readBase(p[:n], off); err != nil {
				return err
			}
			p, off = p[n:], off+n
			continue
		}
		// Fetch the run of uncached store blocks from b with one Read.
		run := d.storeRun(b, (within+int64(len(p))+d.bs-1)/d.bs)
		if run == 0 {
			continue // the block changed state meanwhile: look again
		}
		blocks, err := d.readStore(ctx, b, run)
		if err != nil {
			return err
		}
		d.mu.Lock()
		d.cacheLocked(b, blocks, epoch)
		for i, src := range blocks {
			if len(p) == 0 {
				break
			}
			// A block written since we decided to read the store wins.
			if db := d.dirty[b+uint64(i)]; db != nil {
				src = db.data
			}
			m := copy(p, src[within:])
			p, off, within = p[m:], off+int64(m), 0
		}
		d.mu.Unlock()
	}
	return nil
}

// cacheLocked caches blocks read from the store at start, unless a flush
// completed since the read began (its content may be newer than ours).
//
// Precondition: d.mu is held.
func (d *Device) cacheLocked(start uint64, blocks [][]byte, epoch uint64) {
	if d.maxClean < 0 || d.epoch != epoch {
		return
	}
	for i, data := range blocks {
		b := start + uint64(i)
		if d.dirty[b] != nil || d.clean[b] != nil {
			continue
		}
		for k := range d.clean { // evict arbitrary blocks to make room
			if d.cleanSize+d.bs <= d.maxClean {
				break
			}
			delete(d.clean, k)
			d.cleanSize -= d.bs
		}
		if d.cleanSize+d.bs > d.maxClean {
			return
		}
		d.clean[b] = data
		d.cleanSize += d.bs
	}
}

// storeRun returns how many of the up to max blocks from b are in the store,
// not dirty and not cached, stopping at the first that is not.
func (d *Device) storeRun(b uint64, max int64) int {
	d.mu.Lock()
	defer d.mu.Unlock()
	n := 0
	for int64(n) < max && d.inStore[b+uint64(n)] && d.dirty[b+uint64(n)] == nil && d.clean[b+uint64(n)] == nil {
		n++
	}
	return n
}

// readStore reads count listed blocks from start and validates the answer:
// every block present once, whole, nothing outside the range.
func (d *Device) readStore(ctx context.Context, start uint64, count int) ([][]byte, error) {
	chunks, err := d.store.Read(ctx, start, count)
	if err != nil {
		return nil, fmt.Errorf("cannot read store blocks %d+%d: %w", start, count, err)
	}
	out := make([][]byte, count)
	for _, c := range chunks {
		if len(c.Data) == 0 || int64(len(c.Data))%d.bs != 0 {
			return nil, fmt.Errorf("%w: chunk at block %d has %d bytes, block size %d", ErrBadStoreData, c.Start, len(c.Data), d.bs)
		}
		nb := uint64(int64(len(c.Data)) / d.bs)
		if c.Start < start || c.Start-start >= uint64(count) || nb > uint64(count)-(c.Start-start) {
			return nil, fmt.Errorf("%w: chunk of %d blocks at %d outside the asked %d+%d", ErrBadStoreData, nb, c.Start, start, count)
		}
		for i := range nb {
			k := c.Start - start + i
			if out[k] != nil {
				return nil, fmt.Errorf("%w: block %d returned twice", ErrBadStoreData, start+k)
			}
			out[k] = c.Data[int64(i)*d.bs : int64(i+1)*d.bs]
		}
	}
	for i, o := range out {
		if o == nil {
			return nil, fmt.Errorf("%w: block %d missing from the answer", ErrBadStoreData, start+uint64(i))
		}
	}
	return out, nil
}

// readBase reads from the base; the tail of a last partial block is zeros.
func (d *Device) readBase(p []byte, off int64) error {
	n, err := d.base.ReadAt(p, off)
	if n == len(p) {
		return nil
	}
	if err != nil && err != io.EOF {
		return fmt.Errorf("cannot read base image: %w", err)
	}
	clear(p[n:])
	return nil
}

// blockContent returns the current content of clean block b (store or base).
func (d *Device) blockContent(ctx context.Context, b uint64) ([]byte, error) {
	d.mu.Lock()
	in := d.inStore[b]
	cached := slices.Clone(d.clean[b])
	d.mu.Unlock()
	if cached != nil {
		return cached, nil
	}
	if in {
		chunks, err := d.readStore(ctx, b, 1)
		if err != nil {
			return nil, err
		}
		return slices.Clone(chunks[0]), nil
	}
	buf := make([]byte, d.bs)
	off := int64(b) * d.bs
	if err := d.readBase(buf[:min(d.bs, d.size-off)], off); err != nil {
		return nil, err
	}
	return buf, nil
}

// WriteAt writes p at off into dirty blocks. Writing past the device size is
// refused: the device never grows. See Options.MaxDirtyBytes for write-back.
func (d *Device) WriteAt(ctx context.Context, p []byte, off int64) error {
	if err := d.checkRange(len(p), off); err != nil {
		return err
	}
	// Write back first when this write would take dirty memory over the
	// limit; if that fails the write is refused, so memory stays bounded
	// even when the store keeps failing.
	span := (off%d.bs + int64(len(p)) + d.bs - 1) / d.bs * d.bs
	if dirty := d.Dirty(); dirty > 0 && dirty+span > d.maxDirty {
		if err := d.Flush(ctx); err != nil {
			return fmt.Errorf("cannot write back dirty blocks: %w", err)
		}
	}
	for len(p) > 0 {
		b := uint64(off / d.bs)
		within := off % d.bs
		n := min(int64(len(p)), d.bs-within)
		d.mu.Lock()
		db, ok := d.dirty[b]
		if !ok && n == d.bs {
			db = &dirtyBlock{data: make([]byte, d.bs)}
			d.dirty[b] = db
			d.dirtySize += d.bs
			ok = true
		}
		if ok {
			copy(db.data[within:], p[:n])
			d.gen++
			db.gen = d.gen
			d.mu.Unlock()
		} else {
			// Partial block: read-modify-write, reading outside the lock.
			for !ok {
				epoch := d.epoch
				d.mu.Unlock()
				old, err := d.blockContent(ctx, b)
				if err != nil {
					return err
				}
				d.mu.Lock()
				if db, ok = d.dirty[b]; ok {
					break // dirtied meanwhile: modify that
				}
				if d.epoch != epoch {
					continue // a flush may have made newer content clean: read again
				}
				db = &dirtyBlock{data: old}
				d.dirty[b] = db
				d.dirtySize += d.bs
				ok = true
			}
			copy(db.data[within:], p[:n])
			d.gen++
			db.gen = d.gen
			d.mu.Unlock()
		}
		p, off = p[n:], off+n
	}
	return nil
}

// WriteZeroes writes n zero bytes at off.
func (d *Device) WriteZeroes(ctx context.Context, off, n int64) error {
	if n < 0 {
		return fmt.Errorf("%w: negative length", ErrOutOfRange)
	}
	if err := d.checkRange(0, off); err != nil {
		return err
	}
	if n > d.size-off {
		return fmt.Errorf("%w: %d bytes at %d, size %d", ErrOutOfRange, n, off, d.size)
	}
	zero := make([]byte, min(n, 1<<20))
	for n > 0 {
		m := min(n, int64(len(zero)))
		if err := d.WriteAt(ctx, zero[:m], off); err != nil {
			return err
		}
		off, n = off+m, n-m
	}
	return nil
}

// Flush writes every dirty block to the store with one Write followed by one
// Flush, and marks them clean only after both succeed. On error the blocks
// stay dirty and the next Flush sends them again. See the package doc for
// the ordering guarantee.
func (d *Device) Flush(ctx context.Context) error {
	d.flushMu.Lock()
	defer d.flushMu.Unlock()

	d.mu.Lock()
	if len(d.dirty) == 0 {
		d.mu.Unlock()
		return nil
	}
	type snap struct {
		b   uint64
		gen uint64
	}
	snaps := make([]snap, 0, len(d.dirty))
	chunks := make([]Chunk, 0, len(d.dirty))
	for b, db := range d.dirty {
		snaps = append(snaps, snap{b, db.gen})
	}
	slices.SortFunc(snaps, func(x, y snap) int {
		switch {
		case x.b < y.b:
			return -1
		case x.b > y.b:
			return 1
		}
		return 0
	})
	for _, s := range snaps {
		chunks = append(chunks, Chunk{Start: s.b, Data: slices.Clone(d.dirty[s.b].data)})
	}
	d.mu.Unlock()

	if err := d.store.Write(ctx, chunks); err != nil {
		return fmt.Errorf("cannot write %d blocks to store: %w", len(chunks), err)
	}
	// A store may take a Write past the end of the caller's interest (its
	// lane closed without waiting for it, see native/lane): making those
	// blocks durable now would persist what close reported as dropped.
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("cannot flush store: %w", err)
	}
	if err := d.store.Flush(ctx); err != nil {
		return fmt.Errorf("cannot flush store: %w", err)
	}

	d.mu.Lock()
	defer d.mu.Unlock()
	d.epoch++
	for _, s := range snaps {
		d.inStore[s.b] = true
		if d.clean[s.b] != nil { // older than what the store now holds
			delete(d.clean, s.b)
			d.cleanSize -= d.bs
		}
		if db := d.dirty[s.b]; db != nil && db.gen == s.gen {
			delete(d.dirty, s.b)
			d.dirtySize -= d.bs
		}
	}
	return nil
}
