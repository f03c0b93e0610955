// Package blockstore is the copy-on-write disk of a sandbox: a read-only base
// image overlaid with the blocks of a user's block store (SandboxBlockStore
// in the JS API).
//
// A Device reads a block from the store when the store listed it at Open, and
// from the base otherwise. Writes go to dirty blocks held in memory; Flush
// hands all of them to the store in one Write followed by one Flush, and only
// after both succeed are they clean.
//
// # Ordering guarantee for stores
//
// Each Write the store receives from a Device is followed by a Flush before
// the next Write, and the chunks of one Write are a snapshot of the whole
// device taken at one instant: every WriteAt that returned before the flush
// started is in it (or in an earlier flushed Write), so applying that Write on
// top of the state of the previous Flush yields a crash-consistent disk, the
// disk as it would be had the machine lost power at that instant. A store that
// applies a Write atomically at its Flush therefore only ever holds
// consistent states. When Write or Flush fails, the Device keeps every block
// of that flush dirty and sends them again with the next one; it never
// assumes a failed flush reached the store.
//
// Early write-back (when dirty memory exceeds Options.MaxDirtyBytes) is an
// ordinary flush and keeps the same guarantee.
//
// # Crash semantics
//
// Dirty blocks live only in the Device's memory. Whoever owns the Device
// decides whether they are flushed when the guest goes away: the sandbox
// flushes them only after the guest synced and remounted its root read-only
// on close, and drops them when the VMM died first, so the store keeps the
// state of the guest's last completed flush (ext4 replays its journal at the
// next mount). If the host process dies, nothing more is written, and a
// Write in flight is never followed by its Flush; nor is a Write that
// returns after the context of its Device.Flush ended. docs/cow.md has the
// whole table.
package blockstore

import (
	"context"
	"errors"
)

// Chunk is a run of whole blocks: Data holds len(Data)/BlockSize blocks
// starting at block index Start.
type Chunk struct {
	Start uint64
	Data  []byte
}

// Store holds the blocks that differ from the base image, addressed by block
// index in the decoded raw disk. It mirrors SandboxBlockStore.
//
// A Device calls List once, at Open. It calls Read only for listed blocks or
// blocks it wrote and flushed itself. The slices passed to Write belong to
// the store only until Write returns; the Data of chunks returned by Read
// belong to the Device.
type Store interface {
	// BlockSize is the size of one block in bytes; it must not change.
	BlockSize() int
	// List returns the indices of the blocks the store holds.
	List(ctx context.Context) ([]uint64, error)
	// Read returns blocks start..start+count-1, each of which the store holds.
	Read(ctx context.Context, start uint64, count int) ([]Chunk, error)
	// Write stores whole blocks. It is followed by Flush, unless the
	// Device's caller gave up on the Write before it returned.
	Write(ctx context.Context, chunks []Chunk) error
	// Flush makes the preceding Writes durable.
	Flush(ctx context.Context) error
}

// Errors returned by Device.
var (
	ErrOutOfRange   = errors.New("blockstore: access beyond the end of the device")
	ErrBadStoreData = errors.New("blockstore: store returned invalid data")
	ErrBlockSize    = errors.New("blockstore: invalid block size")
)
