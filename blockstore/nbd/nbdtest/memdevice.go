// Package nbdtest holds what tests of NBD clients and servers share: an
// in-memory export.
package nbdtest

import (
	"context"
	"sync"
)

// MemDevice is an nbd.Device over a byte slice, safe for concurrent use.
type MemDevice struct {
	mu      sync.Mutex
	b       []byte
	flushes int
}

// NewMemDevice returns a zeroed device of size bytes.
func NewMemDevice(size int) *MemDevice { return &MemDevice{b: make([]byte, size)} }

func (d *MemDevice) Size() int64 { return int64(len(d.b)) }

func (d *MemDevice) ReadAt(_ context.Context, p []byte, off int64) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	copy(p, d.b[off:off+int64(len(p))])
	return nil
}

func (d *MemDevice) WriteAt(_ context.Context, p []byte, off int64) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	copy(d.b[off:off+int64(len(p))], p)
	return nil
}

func (d *MemDevice) WriteZeroes(_ context.Context, off, n int64) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	clear(d.b[off : off+n])
	return nil
}

func (d *MemDevice) Flush(context.Context) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.flushes++
	return nil
}

// Bytes returns a copy of the device's content from off, n bytes long.
func (d *MemDevice) Bytes(off, n int) []byte {
	d.mu.Lock()
	defer d.mu.Unlock()
	return append([]byte(nil), d.b[off:off+n]...)
}

// Flushes says how many times Flush was called.
func (d *MemDevice) Flushes() int {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.flushes
}
