package vfs

import (
	"context"
	"sync"
	"syscall"

	"github.com/hanwen/go-fuse/v2/fuse"
)

// Directory handles hold one listing, taken when the guest reads from
// offset 0, so that offsets stay meaningful while the directory changes:
// rm -rf reads a batch, unlinks it and reads on, and a fresh listing at
// each offset would skip entries.

type dirHandles struct {
	mu   sync.Mutex
	next uint64
	open map[uint64]*dirHandle
}

type dirHandle struct {
	node uint64
	path string

	mu      sync.Mutex
	listing []DirEntry // with "." and ".."; nil until read from offset 0
}

func newDirHandles() *dirHandles {
	return &dirHandles{next: 1, open: map[uint64]*dirHandle{}}
}

func (d *dirHandles) add(h *dirHandle) uint64 {
	d.mu.Lock()
	defer d.mu.Unlock()
	fh := d.next
	d.next++
	d.open[fh] = h
	return fh
}

func (d *dirHandles) get(fh uint64) *dirHandle {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.open[fh]
}

func (d *dirHandles) remove(fh uint64) {
	d.mu.Lock()
	defer d.mu.Unlock()
	delete(d.open, fh)
}

func (s *fileServer) OpenDir(cancel <-chan struct{}, in *fuse.OpenIn, out *fuse.OpenOut) fuse.Status {
	path, code := s.typedPath(in.NodeId, Directory, syscall.ENOTDIR)
	if !code.Ok() {
		return code
	}
	*out = fuse.OpenOut{Fh: s.dirs.add(&dirHandle{node: in.NodeId, path: path})}
	return fuse.OK
}

func (s *fileServer) ReleaseDir(in *fuse.ReleaseIn) { s.dirs.remove(in.Fh) }

func (s *fileServer) ReadDir(cancel <-chan struct{}, in *fuse.ReadIn, out *fuse.DirEntryList) fuse.Status {
	return s.readDir(cancel, in, out, false)
}

// ReadDirPlus also hands out each entry's node and attributes, sparing the
// kernel a LOOKUP per entry (ls -l); it costs a backend Stat per entry,
// which is why the kernel is asked to use it only when it expects lookups
// (FUSE_READDIRPLUS_AUTO).
func (s *fileServer) ReadDirPlus(cancel <-chan struct{}, in *fuse.ReadIn, out *fuse.DirEntryList) fuse.Status {
	return s.readDir(cancel, in, out, true)
}

func (s *fileServer) readDir(cancel <-chan struct{}, in *fuse.ReadIn, out *fuse.DirEntryList, plus bool) fuse.Status {
	h := s.dirs.get(in.Fh)
	if h == nil || h.node != in.NodeId {
		return fuse.Status(syscall.EBADF)
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	if in.Offset == 0 || h.listing == nil {
		listing, code := s.list(cancel, h.path)
		if !code.Ok() {
			return code
		}
		h.listing = listing
	}
	added := 0
	for i := in.Offset; i < uint64(len(h.listing)); i++ {
		e := h.listing[i]
		entry := fuse.DirEntry{Name: e.Name, Mode: s.mode(Stat{Type: e.Type}), Off: i + 1}
		if !plus {
			if !out.AddDirEntry(entry) {
				break
			}
			added++
			continue
		}
		entryOut := out.AddDirLookupEntry(entry)
		if entryOut == nil {
			break
		}
		added++
		if e.Name == "." || e.Name == ".." {
			continue // the kernel ignores their attributes
		}
		st, code := s.stat(cancel, joinPath(h.path, e.Name))
		switch {
		case code == fuse.EINTR && added > 1:
			return fuse.OK // what is there is good; the rest on the next call
		case code == fuse.EINTR:
			return code
		case !code.Ok():
			// Gone or unreadable since the listing: a zero node id tells
			// the kernel to look it up itself if it cares.
			continue
		}
		s.handOut(h.node, e.Name, st, entryOut)
		out.FixMode(entryOut.Mode)
	}
	return fuse.OK
}

// list returns the listing of the directory at path with "." and "..",
// dropping entries whose names a path could not hold.
func (s *fileServer) list(cancel <-chan struct{}, path string) ([]DirEntry, fuse.Status) {
	var entries []DirEntry
	code := s.call(cancel, "list", path, func(ctx context.Context) (err error) {
		entries, err = s.fsys.List(ctx, path)
		return err
	})
	if !code.Ok() {
		return nil, code
	}
	listing := make([]DirEntry, 0, len(entries)+2)
	listing = append(listing, DirEntry{".", Directory}, DirEntry{"..", Directory})
	for _, e := range entries {
		if checkName(e.Name) != 0 || (e.Type != File && e.Type != Directory && e.Type != Symlink) {
			s.log.Printf("list %q: dropping entry %q (%v)", path, e.Name, e.Type)
			continue
		}
		listing = append(listing, e)
	}
	return listing, fuse.OK
}
