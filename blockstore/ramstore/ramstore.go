// Package ramstore is a bounded in-memory blockstore.Store for a root disk
// that lives only as long as its sandbox: the ephemeral copy-on-write root a
// built-in image gets under a network policy (docs/cow.md). Blocks never
// leave host memory and are dropped with the Store, so nothing crosses into
// JavaScript per block.
//
// The guest decides how much it writes, so the Store holds at most a fixed
// number of distinct blocks: a Write that would go past it fails whole, with
// ErrFull, and the Device keeps those blocks dirty (its own bound then makes
// the guest's next writes fail too). Rewriting a block the Store already
// holds costs nothing more.
package ramstore

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"

	"github.com/torkbot/sandbox/blockstore"
)

var _ blockstore.Store = (*Store)(nil)

// ErrFull is returned by a Write that would take the Store past its bound.
var ErrFull = errors.New("ramstore: the in-memory root disk is full")

// Store is safe for concurrent use.
type Store struct {
	bs        int
	maxBlocks int

	mu     sync.Mutex
	blocks map[uint64][]byte
}

// New returns an empty store of blockSize-byte blocks that holds at most
// maxBytes of them (rounded down to whole blocks).
func New(blockSize int, maxBytes int64) *Store {
	return &Store{bs: blockSize, maxBlocks: int(maxBytes / int64(blockSize)), blocks: map[uint64][]byte{}}
}

func (s *Store) BlockSize() int { return s.bs }

// Bytes returns the memory the held blocks take.
func (s *Store) Bytes() int64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return int64(len(s.blocks)) * int64(s.bs)
}

// List is empty for a new Store; a Device calls it once, at Open.
func (s *Store) List(context.Context) ([]uint64, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	list := make([]uint64, 0, len(s.blocks))
	for b := range s.blocks {
		list = append(list, b)
	}
	slices.Sort(list)
	return list, nil
}

// Read returns copies: the Device owns, and may change, what it reads.
func (s *Store) Read(_ context.Context, start uint64, count int) ([]blockstore.Chunk, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]blockstore.Chunk, 0, count)
	for b := start; b < start+uint64(count); b++ {
		data, ok := s.blocks[b]
		if !ok {
			return nil, fmt.Errorf("ramstore: block %d was never written", b)
		}
		out = append(out, blockstore.Chunk{Start: b, Data: slices.Clone(data)})
	}
	return out, nil
}

// Write applies all of chunks, or nothing when they do not fit.
func (s *Store) Write(_ context.Context, chunks []blockstore.Chunk) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	added := 0
	for _, c := range chunks {
		if len(c.Data)%s.bs != 0 {
			return fmt.Errorf("ramstore: partial block written at block %d", c.Start)
		}
		for i := range uint64(len(c.Data) / s.bs) {
			if _, ok := s.blocks[c.Start+i]; !ok {
				added++
			}
		}
	}
	if len(s.blocks)+added > s.maxBlocks {
		return fmt.Errorf("%w: %d blocks of %d bytes held, %d more asked, %d allowed", ErrFull, len(s.blocks), s.bs, added, s.maxBlocks)
	}
	for _, c := range chunks {
		for i := range len(c.Data) / s.bs {
			b := c.Start + uint64(i)
			block := c.Data[i*s.bs : (i+1)*s.bs]
			if old, ok := s.blocks[b]; ok {
				copy(old, block)
			} else {
				s.blocks[b] = slices.Clone(block)
			}
		}
	}
	return nil
}

// Flush has nothing to make durable: the blocks die with the Store.
func (s *Store) Flush(context.Context) error { return nil }
