package nbd

import (
	"context"
	"errors"
	"io"
)

// ErrReadOnly is returned by the writing methods of ReaderAtDevice.
var ErrReadOnly = errors.New("nbd: device is read-only")

// ReaderAtDevice exports an io.ReaderAt of size bytes (a decoded base image)
// as a read-only Device; serve it with Options.ReadOnly set.
type ReaderAtDevice struct {
	R io.ReaderAt
	N int64
}

var _ Device = ReaderAtDevice{}

func (d ReaderAtDevice) Size() int64 { return d.N }

func (d ReaderAtDevice) ReadAt(_ context.Context, p []byte, off int64) error {
	n, err := d.R.ReadAt(p, off)
	if n == len(p) {
		return nil
	}
	return err
}

func (ReaderAtDevice) WriteAt(context.Context, []byte, int64) error    { return ErrReadOnly }
func (ReaderAtDevice) WriteZeroes(context.Context, int64, int64) error { return ErrReadOnly }
func (ReaderAtDevice) Flush(context.Context) error                     { return nil }
