package lane

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"sync"
	"time"

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

// storeAnswerTimeout bounds how long close waits for one block store
// write() or flush() once nothing else is left to wait for. The call is
// never abandoned (blockstore/eventstore): past this bound close rejects,
// the store stays claimed until the call settles (src/block-store-events.ts)
// and no flush() follows a write() that settles late, so the store keeps
// its last flushed state, or the one the late flush() completes. 30 s is
// the FUSE backend call timeout (vfs.DefaultCallTimeout): a store is as
// remote as a mount's backend, and one write() is at most 64 MiB.
const storeAnswerTimeout = 30 * time.Second

// watchedStore is a COW root's store as the lane sees it: which write() or
// flush() is in flight and since when, and how long the store has spent in
// them, so that close can tell a guest that does not shut down from a
// store that is slow, and name a store call that does not answer.
type watchedStore struct {
	blockstore.Store
	mu    sync.Mutex
	call  string    // "write()" or "flush()" while one is in flight
	since time.Time // when it began
	spent time.Duration
}

func (w *watchedStore) Write(ctx context.Context, chunks []blockstore.Chunk) error {
	defer w.track("write()")()
	return w.Store.Write(ctx, chunks)
}

func (w *watchedStore) Flush(ctx context.Context) error {
	defer w.track("flush()")()
	return w.Store.Flush(ctx)
}

func (w *watchedStore) track(call string) (done func()) {
	w.mu.Lock()
	w.call, w.since = call, time.Now()
	w.mu.Unlock()
	return func() {
		w.mu.Lock()
		w.spent += time.Since(w.since)
		w.call = ""
		w.mu.Unlock()
	}
}

// state returns the call in flight ("" if none) and for how long, and the
// total time spent in calls, the one in flight included.
func (w *watchedStore) state() (call string, busy, spent time.Duration) {
	if w == nil {
		return "", 0, 0
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.call != "" {
		busy = time.Since(w.since)
	}
	return w.call, busy, w.spent + busy
}

// await waits until done is closed, or until a store call has been in
// flight for storeAnswerTimeout: then it calls giveUp and returns a
// *StoreError naming that call. Without a store it only waits.
func (r *rootDisk) await(done <-chan struct{}, giveUp func()) error {
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	for {
		select {
		case <-done:
			return nil
		case <-tick.C:
		}
		if call, busy, _ := r.store.state(); busy > storeAnswerTimeout {
			giveUp()
			return &StoreError{Op: "flush", Err: fmt.Errorf("block store %s did not answer within %v (the store stays attached to this process until it does, and no flush() follows)", call, storeAnswerTimeout)}
		}
	}
}

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
	store *watchedStore      // a COW root's store (not an ephemeral one's)
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
		r.store = &watchedStore{Store: store}
		// The device is exactly the base's size: writes past it are
		// refused (the NBD export cannot grow either).
		r.cow, err = blockstore.Open(ctx, img, img.Size(), r.store, blockstore.Options{MaxDirtyBytes: cowMaxDirtyBytes})
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
// Flush does not read the base image, so this may run after Close. A store
// call that does not answer ends it after storeAnswerTimeout (see await).
func (r *rootDisk) persist(ctx context.Context, synced bool, cause error) error {
	if r == nil || r.cow == nil || r.ephemeral {
		return nil
	}
	if !synced {
		return fmt.Errorf("the root disk's writes since the guest's last flush were not persisted (%d bytes dropped; the block store keeps the state of that flush): %w", r.cow.Dirty(), cause)
	}
	fctx, giveUp := context.WithCancel(context.WithoutCancel(ctx))
	defer giveUp()
	done := make(chan struct{})
	var err error
	go func() {
		defer close(done)
		err = r.cow.Flush(fctx)
	}()
	if werr := r.await(done, giveUp); werr != nil {
		return werr
	}
	if err != nil {
		return &StoreError{Op: "flush", Err: err}
	}
	return nil
}
