// Package memstore is an in-memory blockstore.Store for tests: it keeps a
// durable map of blocks, stages each Write until Flush applies it atomically,
// and can be told to fail.
package memstore

import (
	"context"
	"errors"
	"maps"
	"slices"
	"sync"

	"github.com/torkbot/sandbox/blockstore"
)

var _ blockstore.Store = (*Store)(nil)

// ErrInjected is returned by operations made to fail.
var ErrInjected = errors.New("memstore: injected failure")

// Store is safe for concurrent use.
type Store struct {
	bs int

	mu        sync.Mutex
	durable   map[uint64][]byte
	staged    map[uint64][]byte
	FailWrite bool // Write returns ErrInjected
	FailFlush bool // Flush returns ErrInjected and drops the staged blocks
	// ReadHook, when set, replaces the answer of Read (to test validation).
	ReadHook func(start uint64, count int, chunks []blockstore.Chunk) []blockstore.Chunk
	Reads    int // number of Read calls
	Writes   int // number of successful Write calls
	Flushes  int // number of successful Flush calls
}

// New returns an empty store of blockSize-byte blocks.
func New(blockSize int) *Store {
	return &Store{bs: blockSize, durable: map[uint64][]byte{}, staged: map[uint64][]byte{}}
}

func (s *Store) BlockSize() int { return s.bs }

func (s *Store) List(context.Context) ([]uint64, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Sorted(maps.Keys(s.durable)), nil
}

func (s *Store) Read(_ context.Context, start uint64, count int) ([]blockstore.Chunk, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.Reads++
	var out []blockstore.Chunk
	for i := range uint64(count) {
		if b, ok := s.durable[start+i]; ok {
			out = append(out, blockstore.Chunk{Start: start + i, Data: slices.Clone(b)})
		}
	}
	if s.ReadHook != nil {
		out = s.ReadHook(start, count, out)
	}
	return out, nil
}

func (s *Store) Write(_ context.Context, chunks []blockstore.Chunk) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.FailWrite {
		return ErrInjected
	}
	for _, c := range chunks {
		if len(c.Data)%s.bs != 0 {
			return errors.New("memstore: partial block written")
		}
		for i := 0; i < len(c.Data)/s.bs; i++ {
			s.staged[c.Start+uint64(i)] = slices.Clone(c.Data[i*s.bs : (i+1)*s.bs])
		}
	}
	s.Writes++
	return nil
}

func (s *Store) Flush(context.Context) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.FailFlush {
		clear(s.staged)
		return ErrInjected
	}
	maps.Copy(s.durable, s.staged)
	clear(s.staged)
	s.Flushes++
	return nil
}

// Blocks returns a copy of the durable blocks.
func (s *Store) Blocks() map[uint64][]byte {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make(map[uint64][]byte, len(s.durable))
	for k, v := range s.durable {
		out[k] = slices.Clone(v)
	}
	return out
}

// Set sets the fail switches under the store's lock.
func (s *Store) Set(failWrite, failFlush bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.FailWrite, s.FailFlush = failWrite, failFlush
}
