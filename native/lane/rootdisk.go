package lane

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"sync"

	"github.com/torkbot/sandbox/blockstore"
	"github.com/torkbot/sandbox/blockstore/nbd"
	"github.com/torkbot/sandbox/blockstore/qcow2"
	"github.com/torkbot/sandbox/blockstore/ramstore"
	"github.com/torkbot/sandbox/vmm"
)

// cowMaxDirtyBytes bounds the root disk writes a COW lane holds in host
// memory between two flushes to its store. The guest flushes at every ext4
// journal commit (every 5 s at most) and at close, so this is what one
// commit interval may write before the host writes back early; 64 MiB
// covers a typical package install without early write-backs, is small
// next to the guest's own memory (512 MiB by default), and is also the
// largest single write() a store receives.
const cowMaxDirtyBytes = blockstore.DefaultMaxDirtyBytes

// ephemeralRootBytes bounds the blocks an ephemeral root (a built-in
// image under a network policy, see Config.EphemeralRoot) holds in host
// memory once the guest flushed them; the guest's unflushed writes add at
// most cowMaxDirtyBytes. So one such sandbox costs the host at most
// 256 + 64 = 320 MiB, however much its guest writes. 256 MiB is most of the
// built-in image's own size (379 MiB) and more than a package install
// changes. Past it the guest's writes and flushes fail with EIO (never
// ENOSPC: QEMU's default is to pause the VM on ENOSPC), and ext4 reports
// the I/O errors and aborts its journal, leaving the root read-only.
const ephemeralRootBytes = 256 << 20

// ephemeralBlockSize is the ext4 block size of the built-in images: no
// read-modify-write of larger blocks for a 4 KiB change.
const ephemeralBlockSize = 4096

// StoreError reports that a COW root's block store failed, or answered
// something invalid: when the disk opened (list()), or at the final flush of
// close. The store still holds the state of its last successful flush.
type StoreError struct {
	Op  string // "open" or "flush"
	Err error
}

func (e *StoreError) Error() string {
	switch e.Op {
	case "open":
		return fmt.Sprintf("cannot open the copy-on-write root disk: %v", e.Err)
	default:
		return fmt.Sprintf("the copy-on-write root disk was not persisted: %v; the block store keeps the state of its last successful flush", e.Err)
	}
}

func (e *StoreError) Unwrap() error { return e.Err }

// rootDisk is a built-in image decoded for the guest's root disk, and for a
// COW root the copy-on-write device over it and the store.
type rootDisk struct {
	file  *os.File
	image *qcow2.Image
	cow   *blockstore.Device // nil for a read-only root
	// ephemeral: cow's store is a ramstore, dropped at close.
	ephemeral bool
}

// openRoot decodes the image d names. With a store (d.ReadOnly false) it
// also opens the COW device, which lists the store's blocks. An ephemeral
// root (a read-only image without a store) gets a COW device over a
// ramstore of ephemeralRootBytes instead.
func openRoot(ctx context.Context, d vmm.Disk, store blockstore.Store, ephemeral bool) (*rootDisk, error) {
	if d.Format != "qcow2" {
		return nil, fmt.Errorf("root disk %s: format %q is not served (want qcow2)", d.Path, d.Format)
	}
	if !d.ReadOnly && store == nil {
		return nil, fmt.Errorf("root disk %s: writable roots need a block store", d.Path)
	}
	if d.ReadOnly && store != nil {
		return nil, fmt.Errorf("root disk %s: a block store was given for a read-only root", d.Path)
	}
	f, err := os.Open(d.Path)
	if err != nil {
		return nil, fmt.Errorf("open root disk: %w", err)
	}
	st, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("open root disk: %w", err)
	}
	img, err := qcow2.Open(f, st.Size())
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("root disk %s: %w", d.Path, err)
	}
	r := &rootDisk{file: f, image: img}
	if ephemeral && store == nil {
		// Reading a ramstore is a copy: a clean cache would only double it.
		r.cow, err = blockstore.Open(ctx, img, img.Size(), ramstore.New(ephemeralBlockSize, ephemeralRootBytes),
			blockstore.Options{MaxDirtyBytes: cowMaxDirtyBytes, MaxCleanBytes: -1})
		if err != nil {
			f.Close()
			return nil, fmt.Errorf("open the ephemeral root disk: %w", err)
		}
		r.ephemeral = true
	}
	if store != nil {
		// The device is exactly the base's size: writes past it are
		// refused (the NBD export cannot grow either).
		r.cow, err = blockstore.Open(ctx, img, img.Size(), store, blockstore.Options{MaxDirtyBytes: cowMaxDirtyBytes})
		if err != nil {
			f.Close()
			return nil, &StoreError{Op: "open", Err: err}
		}
	}
	return r, nil
}

// Close releases the image file; nil-safe for lanes that failed to boot.
func (r *rootDisk) Close() {
	if r != nil {
		r.file.Close()
	}
}

// serveRoot serves the root as the NBD export "root" on conn, the host end
// of the socket pair the VMM's NBD client uses: the image read-only, or the
// COW device read-write, whose flushes (guest FLUSH, FUA writes, the
// client's disconnect) reach the store. Device errors the guest sees as EIO
// are reported to log.
func serveRoot(ctx context.Context, conn *os.File, root *rootDisk, log io.Writer) error {
	defer conn.Close()
	c, err := net.FileConn(conn)
	if err != nil {
		return err
	}
	opts := nbd.Options{Name: "root", ReadOnly: root.cow == nil}
	if log != nil {
		// A guest that fills its ephemeral root fails every write from then
		// on: say so once, not once per request.
		var fullOnce sync.Once
		opts.Log = func(err error) {
			if errors.Is(err, ramstore.ErrFull) {
				fullOnce.Do(func() {
					fmt.Fprintf(log, "sandbox: the guest filled its ephemeral root; its writes fail with EIO from now on: %v\n", err)
				})
				return
			}
			fmt.Fprintf(log, "sandbox: root disk I/O error: %v\n", err)
		}
	}
	if root.cow != nil {
		return nbd.Serve(ctx, c, root.cow, opts)
	}
	return nbd.Serve(ctx, c, nbd.ReaderAtDevice{R: root.image, N: root.image.Size()}, opts)
}

// persist is a COW root's final flush at close, once the VMM has exited and
// nothing writes the device any more. synced says whether the guest
// answered the shutdown request, i.e. synced and remounted read-only: if it
// did not (it was killed, crashed or hung), the dirty blocks are writes the
// guest never flushed and are dropped, so the store keeps the last state
// the guest did flush; close then fails with why (cause), rather than claim
// persisted what the guest never synced.
//
// Flush does not read the base image, so this may run after Close.
func (r *rootDisk) persist(ctx context.Context, synced bool, cause error) error {
	if r == nil || r.cow == nil || r.ephemeral {
		return nil
	}
	if !synced {
		return fmt.Errorf("the root disk's writes since the guest's last flush were not persisted (%d bytes dropped; the block store keeps the state of that flush): %w", r.cow.Dirty(), cause)
	}
	if err := r.cow.Flush(context.WithoutCancel(ctx)); err != nil {
		return &StoreError{Op: "flush", Err: err}
	}
	return nil
}
