// Package eventstore is a blockstore.Store whose blocks live on the other
// side of a request/response event channel: in the addon, the user's
// SandboxBlockStore in JavaScript, reached through the boot request's kept
// handler (src/block-store-events.ts is the other side). It defines the
// binary framing of those events and checks every answer before a Device
// sees it, so a faulty store fails with an error that names what it did
// wrong instead of corrupting the guest's disk.
//
// # Framing
//
// Block data never goes through JSON: an event's payload and its answer are
// bytes, and every integer in them is big-endian.
//
//	event         payload (Go → JS)                  answer (JS → Go)
//	block-list    empty                              n × u64 block index
//	block-read    u64 start, u32 count               repeated: u64 start, u32 length, length bytes
//	block-write   u32 n, n × (u64 start, u32 length), empty
//	              then the n chunks' bytes in order
//	block-flush   empty                              empty
//
// The JavaScript side turns these into list(), read({start, count}),
// write(chunks) and flush() calls with the same context object ({ base }).
//
// # Cancellation
//
// List and Read follow their context: abandoning them changes nothing in
// the store. Write and Flush never abandon a call in flight, whatever the
// context says, and return only when the store answered: a write that
// landed after its lane was closed could overwrite the blocks of the next
// lane booted from the same store. (If the JavaScript environment itself
// goes away, the call fails: nothing can land any more.) Their caller may
// stop waiting for them (native/lane does, after 30 s); the JavaScript side
// keeps the store claimed until they settle.
package eventstore

import (
	"context"
	"encoding/binary"
	"fmt"
	"math"

	"github.com/torkbot/sandbox/blockstore"
	"github.com/torkbot/sandbox/native/protocol"
)

// Caller sends one event and returns its answer; *napi.Callback is one.
// The event names are protocol.EventBlock*.
type Caller = protocol.Caller

// Store is a blockstore.Store over a Caller. It keeps no state besides the
// block size, so it is safe for concurrent use if the Caller is.
type Store struct {
	c  Caller
	bs int
}

var _ blockstore.Store = (*Store)(nil)

// New returns the store of blockSize-byte blocks that c reaches.
func New(c Caller, blockSize int) *Store { return &Store{c: c, bs: blockSize} }

func (s *Store) BlockSize() int { return s.bs }

// List returns the listed block indices; whether they lie inside the disk is
// for blockstore.Open to check (it knows the disk's size).
func (s *Store) List(ctx context.Context) ([]uint64, error) {
	out, err := s.c.Call(ctx, protocol.EventBlockList, nil)
	if err != nil {
		return nil, fmt.Errorf("block store list() failed: %w", err)
	}
	if len(out)%8 != 0 {
		return nil, fmt.Errorf("%w: list() answer of %d bytes is not a whole number of 8-byte block indices", blockstore.ErrBadStoreData, len(out))
	}
	list := make([]uint64, len(out)/8)
	for i := range list {
		list[i] = binary.BigEndian.Uint64(out[8*i:])
	}
	return list, nil
}

// Read asks for blocks start..start+count-1 and checks the answer: chunks of
// whole blocks, inside the range, none twice, every block present.
func (s *Store) Read(ctx context.Context, start uint64, count int) ([]blockstore.Chunk, error) {
	if count <= 0 || count > math.MaxUint32 || start > math.MaxUint64-uint64(count) {
		return nil, fmt.Errorf("blockstore/eventstore: invalid read of %d blocks at %d", count, start)
	}
	req := binary.BigEndian.AppendUint64(make([]byte, 0, 12), start)
	req = binary.BigEndian.AppendUint32(req, uint32(count))
	out, err := s.c.Call(ctx, protocol.EventBlockRead, req)
	if err != nil {
		return nil, fmt.Errorf("block store read({start: %dn, count: %d}) failed: %w", start, count, err)
	}
	chunks, err := DecodeChunks(out)
	if err != nil {
		return nil, fmt.Errorf("%w: read({start: %dn, count: %d}) answered: %v", blockstore.ErrBadStoreData, start, count, err)
	}
	if err := s.checkRead(start, count, chunks); err != nil {
		return nil, fmt.Errorf("%w: read({start: %dn, count: %d}) %v; read() must return each block of the range once, as whole %d-byte blocks", blockstore.ErrBadStoreData, start, count, err, s.bs)
	}
	return chunks, nil
}

func (s *Store) checkRead(start uint64, count int, chunks []blockstore.Chunk) error {
	seen := make([]bool, count)
	for _, c := range chunks {
		if len(c.Data) == 0 || len(c.Data)%s.bs != 0 {
			return fmt.Errorf("returned a chunk at block %d of %d bytes, not a whole number of blocks", c.Start, len(c.Data))
		}
		n := uint64(len(c.Data) / s.bs)
		if c.Start < start || c.Start-start >= uint64(count) || n > uint64(count)-(c.Start-start) {
			return fmt.Errorf("returned %d blocks at %d, outside the range asked for", n, c.Start)
		}
		for i := c.Start - start; i < c.Start-start+n; i++ {
			if seen[i] {
				return fmt.Errorf("returned block %d twice", start+i)
			}
			seen[i] = true
		}
	}
	for i, ok := range seen {
		if !ok {
			return fmt.Errorf("did not return block %d", start+uint64(i))
		}
	}
	return nil
}

// Write sends whole blocks; see the package doc for why it is never
// abandoned once sent.
func (s *Store) Write(ctx context.Context, chunks []blockstore.Chunk) error {
	for _, c := range chunks {
		if len(c.Data) == 0 || len(c.Data)%s.bs != 0 {
			return fmt.Errorf("blockstore/eventstore: chunk at block %d has %d bytes, not whole %d-byte blocks", c.Start, len(c.Data), s.bs)
		}
	}
	payload, err := EncodeWrite(chunks)
	if err != nil {
		return err
	}
	if _, err := s.c.Call(context.WithoutCancel(ctx), protocol.EventBlockWrite, payload); err != nil {
		return fmt.Errorf("block store write() failed: %w", err)
	}
	return nil
}

// Flush asks the store to make its writes durable; never abandoned once sent.
func (s *Store) Flush(ctx context.Context) error {
	if _, err := s.c.Call(context.WithoutCancel(ctx), protocol.EventBlockFlush, nil); err != nil {
		return fmt.Errorf("block store flush() failed: %w", err)
	}
	return nil
}

// EncodeWrite frames a block-write payload.
func EncodeWrite(chunks []blockstore.Chunk) ([]byte, error) {
	if len(chunks) > math.MaxUint32 {
		return nil, fmt.Errorf("blockstore/eventstore: %d chunks in one write", len(chunks))
	}
	size := 4 + 12*len(chunks)
	for _, c := range chunks {
		if len(c.Data) > math.MaxUint32 {
			return nil, fmt.Errorf("blockstore/eventstore: chunk of %d bytes", len(c.Data))
		}
		size += len(c.Data)
	}
	b := make([]byte, 0, size)
	b = binary.BigEndian.AppendUint32(b, uint32(len(chunks)))
	for _, c := range chunks {
		b = binary.BigEndian.AppendUint64(b, c.Start)
		b = binary.BigEndian.AppendUint32(b, uint32(len(c.Data)))
	}
	for _, c := range chunks {
		b = append(b, c.Data...)
	}
	return b, nil
}

// DecodeChunks parses a block-read answer: repeated (u64 start, u32 length,
// length bytes), nothing after the last chunk. The chunks' Data alias b.
func DecodeChunks(b []byte) ([]blockstore.Chunk, error) {
	var chunks []blockstore.Chunk
	for len(b) > 0 {
		if len(b) < 12 {
			return nil, fmt.Errorf("%d bytes after the last chunk, too short for a chunk header", len(b))
		}
		start := binary.BigEndian.Uint64(b)
		n := binary.BigEndian.Uint32(b[8:])
		b = b[12:]
		if uint64(n) > uint64(len(b)) {
			return nil, fmt.Errorf("chunk at block %d says %d bytes, %d left", start, n, len(b))
		}
		chunks = append(chunks, blockstore.Chunk{Start: start, Data: b[:n:n]})
		b = b[n:]
	}
	return chunks, nil
}
