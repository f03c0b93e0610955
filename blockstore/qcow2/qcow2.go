// Package qcow2 decodes a read-only qcow2 image into the raw block device it
// describes.
//
// It reads version 2 and 3 images without a backing file: the header, the
// L1 and L2 tables, standard clusters, all-zero clusters, and compressed
// clusters in both compression types (deflate, called "zlib" by QEMU, and
// zstd). Unallocated clusters read as zeros. Refcounts and snapshots are
// ignored: only the active L1 table is read. Encryption, external data files,
// extended L2 entries and backing files are refused at Open with an error.
//
// Why our own reader: the maintained Go reader (lima-vm/go-qcow2reader)
// registers decompressors in a process-wide map (zstd is not registered by
// default), logs through a global logger, opens backing files by the path
// written in the image, and trusts header fields for allocation sizes (an L1
// size taken from the image is allocated before it is checked against the
// file). Built-in images are ours, but a corrupt or truncated file must give
// an error and never a panic or a huge allocation, so every field here is
// bounds-checked against the file size before use, and FuzzOpen exercises the
// parser.
//
// An Image is safe for concurrent use by multiple goroutines.
package qcow2

import (
	"bytes"
	"compress/flate"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"sync"

	"github.com/klauspost/compress/zstd"
)

// Errors returned by Open. Corruption is reported with ErrCorrupt wrapped
// with the detail.
var (
	ErrNotQcow2    = errors.New("qcow2: not a qcow2 image")
	ErrBackingFile = errors.New("qcow2: images with a backing file are not supported")
	ErrUnsupported = errors.New("qcow2: unsupported image feature")
	ErrCorrupt     = errors.New("qcow2: corrupt image")
)

const (
	magic = 0x514649fb

	minClusterBits = 9
	maxClusterBits = 21 // QEMU's limit: 2 MiB clusters.

	// maxL1Entries is QEMU's QCOW_MAX_L1_SIZE (32 MiB) in entries.
	maxL1Entries = 32 << 20 / 8

	// maxSize bounds the virtual size so that offsets fit in int64 with room.
	maxSize = 1 << 56

	incompatDirty       = 1 << 0
	incompatCorrupt     = 1 << 1
	incompatDataFile    = 1 << 2
	incompatCompression = 1 << 3
	incompatExtendedL2  = 1 << 4

	compressionZlib = 0
	compressionZstd = 1

	offsetMask   = 0x00fffffffffffe00 // bits 9-55 of L1 and standard L2 entries
	l2Compressed = 1 << 62
	l2Copied     = 1 << 63
	l2ZeroFlag   = 1 << 0

	// l2CacheTables bounds the number of decoded L2 tables kept in memory.
	l2CacheTables = 64
	// compressedCacheClusters bounds the decompressed clusters kept.
	compressedCacheClusters = 16
)

// Image is an opened qcow2 image. Its methods read through the io.ReaderAt
// given to Open, which must stay valid while the Image is used.
type Image struct {
	r           io.ReaderAt
	fileSize    int64
	size        int64
	clusterBits uint
	clusterSize int64
	l2Entries   int64
	compression byte
	version     uint32
	l1          []uint64

	// mu guards the caches.
	mu      sync.Mutex
	l2cache map[uint64][]uint64
	// ccache holds recently decompressed clusters by L2 entry, so sequential
	// small reads of one compressed cluster decompress it once.
	ccache map[uint64][]byte
}

// Header is the part of the header a caller may want to show.
type Header struct {
	Version         uint32
	ClusterBits     uint32
	Size            uint64
	CompressionType string // "zlib" or "zstd"
}

// Open parses the header and L1 table of the image held in r, whose length in
// bytes is fileSize.
func Open(r io.ReaderAt, fileSize int64) (*Image, error) {
	if fileSize < 72 {
		return nil, fmt.Errorf("%w: file is %d bytes", ErrNotQcow2, fileSize)
	}
	hdr := make([]byte, 112)
	n, err := r.ReadAt(hdr[:min(int64(len(hdr)), fileSize)], 0)
	if n < 72 {
		return nil, fmt.Errorf("cannot read qcow2 header: %w", errOr(err, io.ErrUnexpectedEOF))
	}
	be := binary.BigEndian
	if be.Uint32(hdr[0:]) != magic {
		return nil, ErrNotQcow2
	}
	version := be.Uint32(hdr[4:])
	if version != 2 && version != 3 {
		return nil, fmt.Errorf("%w: version %d", ErrUnsupported, version)
	}
	if be.Uint64(hdr[8:]) != 0 || be.Uint32(hdr[16:]) != 0 {
		return nil, ErrBackingFile
	}
	clusterBits := be.Uint32(hdr[20:])
	if clusterBits < minClusterBits || clusterBits > maxClusterBits {
		return nil, fmt.Errorf("%w: cluster_bits %d", ErrCorrupt, clusterBits)
	}
	size := be.Uint64(hdr[24:])
	if size > maxSize {
		return nil, fmt.Errorf("%w: virtual size %d", ErrUnsupported, size)
	}
	if crypt := be.Uint32(hdr[32:]); crypt != 0 {
		return nil, fmt.Errorf("%w: encryption method %d", ErrUnsupported, crypt)
	}
	l1Size := be.Uint32(hdr[36:])
	l1Offset := be.Uint64(hdr[40:])

	im := &Image{
		r:           r,
		fileSize:    fileSize,
		size:        int64(size),
		clusterBits: uint(clusterBits),
		clusterSize: 1 << clusterBits,
		l2Entries:   1 << (clusterBits - 3),
		version:     version,
		l2cache:     make(map[uint64][]uint64),
		ccache:      make(map[uint64][]byte),
	}

	if version == 3 {
		if n < 104 {
			return nil, fmt.Errorf("%w: truncated version 3 header", ErrCorrupt)
		}
		incompat := be.Uint64(hdr[72:])
		headerLen := be.Uint32(hdr[100:])
		if headerLen < 104 || int64(headerLen) > im.clusterSize || int64(headerLen) > fileSize {
			return nil, fmt.Errorf("%w: header_length %d", ErrCorrupt, headerLen)
		}
		switch {
		case incompat&incompatCorrupt != 0:
			return nil, fmt.Errorf("%w: image is marked corrupt", ErrCorrupt)
		case incompat&incompatDataFile != 0:
			return nil, fmt.Errorf("%w: external data file", ErrUnsupported)
		case incompat&incompatExtendedL2 != 0:
			return nil, fmt.Errorf("%w: extended L2 entries", ErrUnsupported)
		case incompat&^(incompatDirty|incompatCompression) != 0:
			return nil, fmt.Errorf("%w: incompatible features %#x", ErrUnsupported, incompat)
		}
		// The dirty bit only means refcounts may be stale; we never read them.
		if incompat&incompatCompression != 0 {
			if headerLen < 105 || n < 105 {
				return nil, fmt.Errorf("%w: compression type bit set without the field", ErrCorrupt)
			}
			im.compression = hdr[104]
			if im.compression != compressionZlib && im.compression != compressionZstd {
				return nil, fmt.Errorf("%w: compression type %d", ErrUnsupported, im.compression)
			}
		} else if headerLen >= 105 && n >= 105 && hdr[104] != compressionZlib {
			return nil, fmt.Errorf("%w: compression type %d without the incompatible bit", ErrCorrupt, hdr[104])
		}
	}

	// The L1 table must cover the virtual size and lie inside the file.
	bytesPerL1 := uint64(im.clusterSize) * uint64(im.l2Entries)
	need := (size + bytesPerL1 - 1) / bytesPerL1
	if uint64(l1Size) < need || l1Size > maxL1Entries {
		return nil, fmt.Errorf("%w: l1_size %d for virtual size %d", ErrCorrupt, l1Size, size)
	}
	if l1Size > 0 {
		if l1Offset%uint64(im.clusterSize) != 0 || l1Offset > uint64(fileSize) || uint64(l1Size)*8 > uint64(fileSize)-l1Offset {
			return nil, fmt.Errorf("%w: l1_table_offset %#x outside the file", ErrCorrupt, l1Offset)
		}
		raw := make([]byte, int(l1Size)*8)
		if _, err := r.ReadAt(raw, int64(l1Offset)); err != nil {
			return nil, fmt.Errorf("cannot read qcow2 L1 table: %w", err)
		}
		im.l1 = make([]uint64, l1Size)
		for i := range im.l1 {
			im.l1[i] = be.Uint64(raw[i*8:])
		}
	}
	return im, nil
}

// Size returns the virtual size of the disk in bytes.
func (im *Image) Size() int64 { return im.size }

// Header returns the decoded header fields.
func (im *Image) Header() Header {
	h := Header{Version: im.version, ClusterBits: uint32(im.clusterBits), Size: uint64(im.size), CompressionType: "zlib"}
	if im.compression == compressionZstd {
		h.CompressionType = "zstd"
	}
	return h
}

// ReadAt reads len(p) bytes of the virtual disk at off. Reading past Size
// returns the bytes up to Size and io.EOF.
func (im *Image) ReadAt(p []byte, off int64) (int, error) {
	if off < 0 {
		return 0, fmt.Errorf("qcow2: negative offset %d", off)
	}
	if off >= im.size {
		if len(p) == 0 {
			return 0, nil
		}
		return 0, io.EOF
	}
	var eof error
	if int64(len(p)) > im.size-off {
		p = p[:im.size-off]
		eof = io.EOF
	}
	n := 0
	for n < len(p) {
		pos := off + int64(n)
		inCluster := pos & (im.clusterSize - 1)
		chunk := p[n:min(len(p), n+int(im.clusterSize-inCluster))]
		if err := im.readInCluster(chunk, pos>>im.clusterBits, inCluster); err != nil {
			return n, err
		}
		n += len(chunk)
	}
	return n, eof
}

// readInCluster fills p from guest cluster index at byte offset within it.
func (im *Image) readInCluster(p []byte, cluster, within int64) error {
	l1Index := cluster / im.l2Entries
	if l1Index >= int64(len(im.l1)) {
		return fmt.Errorf("%w: cluster %d beyond the L1 table", ErrCorrupt, cluster)
	}
	l2, err := im.l2Table(im.l1[l1Index])
	if err != nil {
		return err
	}
	if l2 == nil {
		clear(p)
		return nil
	}
	entry := l2[cluster%im.l2Entries]
	if entry&l2Compressed != 0 {
		data, err := im.compressedCluster(entry)
		if err != nil {
			return err
		}
		copy(p, data[within:])
		return nil
	}
	if entry&^uint64(l2Copied|offsetMask|l2ZeroFlag) != 0 {
		return fmt.Errorf("%w: reserved bits in L2 entry %#x", ErrCorrupt, entry)
	}
	host := entry & offsetMask
	if entry&l2ZeroFlag != 0 || host == 0 {
		clear(p)
		return nil
	}
	if host%uint64(im.clusterSize) != 0 || host >= uint64(im.fileSize) {
		return fmt.Errorf("%w: data cluster offset %#x", ErrCorrupt, host)
	}
	return im.readFile(p, int64(host)+within)
}

// readFile reads p from the image file at off; bytes past the end of the file
// read as zeros, as QEMU's file driver does for a cluster at the tail.
func (im *Image) readFile(p []byte, off int64) error {
	n, err := im.r.ReadAt(p, off)
	if n == len(p) {
		return nil
	}
	if err != nil && !errors.Is(err, io.EOF) {
		return fmt.Errorf("cannot read qcow2 data: %w", err)
	}
	clear(p[n:])
	return nil
}

// l2Table returns the decoded L2 table an L1 entry points to, or nil when the
// entry is unallocated.
func (im *Image) l2Table(l1Entry uint64) ([]uint64, error) {
	if l1Entry&^uint64(l2Copied|offsetMask) != 0 {
		return nil, fmt.Errorf("%w: reserved bits in L1 entry %#x", ErrCorrupt, l1Entry)
	}
	off := l1Entry & offsetMask
	if off == 0 {
		return nil, nil
	}
	if off%uint64(im.clusterSize) != 0 || off > uint64(im.fileSize) || uint64(im.clusterSize) > uint64(im.fileSize)-off {
		return nil, fmt.Errorf("%w: L2 table offset %#x", ErrCorrupt, off)
	}
	im.mu.Lock()
	t, ok := im.l2cache[off]
	im.mu.Unlock()
	if ok {
		return t, nil
	}
	raw := make([]byte, im.clusterSize)
	if _, err := im.r.ReadAt(raw, int64(off)); err != nil {
		return nil, fmt.Errorf("cannot read qcow2 L2 table: %w", err)
	}
	t = make([]uint64, im.l2Entries)
	for i := range t {
		t[i] = binary.BigEndian.Uint64(raw[i*8:])
	}
	im.mu.Lock()
	if len(im.l2cache) >= l2CacheTables {
		for k := range im.l2cache { // evict an arbitrary table
			delete(im.l2cache, k)
			break
		}
	}
	im.l2cache[off] = t
	im.mu.Unlock()
	return t, nil
}

// compressedCluster returns the decompressed cluster of an L2 entry, cached.
// The returned slice is shared and must not be modified.
func (im *Image) compressedCluster(entry uint64) ([]byte, error) {
	im.mu.Lock()
	data, ok := im.ccache[entry]
	im.mu.Unlock()
	if ok {
		return data, nil
	}
	data, err := im.decompress(entry)
	if err != nil {
		return nil, err
	}
	im.mu.Lock()
	if len(im.ccache) >= compressedCacheClusters {
		for k := range im.ccache {
			delete(im.ccache, k)
			break
		}
	}
	im.ccache[entry] = data
	im.mu.Unlock()
	return data, nil
}

var zstdDecoders = sync.Pool{New: func() any {
	// Concurrency 1 makes stream decoding synchronous: no goroutines to leak
	// from pooled decoders. The window limit bounds memory for a corrupt frame.
	d, err := zstd.NewReader(nil, zstd.WithDecoderConcurrency(1), zstd.WithDecoderMaxWindow(8<<20), zstd.WithDecoderLowmem(true))
	if err != nil {
		panic(err) // only invalid options fail
	}
	return d
}}

// decompress returns the full guest cluster held in a compressed L2 entry.
func (im *Image) decompress(entry uint64) ([]byte, error) {
	x := 62 - (im.clusterBits - 8)
	host := entry & (1<<x - 1)
	sectors := (entry&^uint64(l2Copied|l2Compressed))>>x + 1
	csize := sectors*512 - host&511
	if host >= uint64(im.fileSize) {
		return nil, fmt.Errorf("%w: compressed cluster offset %#x", ErrCorrupt, host)
	}
	csize = min(csize, uint64(im.fileSize)-host)
	in := make([]byte, csize)
	n, err := im.r.ReadAt(in, int64(host))
	if n < len(in) && err != nil && !errors.Is(err, io.EOF) {
		return nil, fmt.Errorf("cannot read qcow2 compressed cluster: %w", err)
	}
	in = in[:n]
	out := make([]byte, im.clusterSize)
	// The stored bytes are padded to a sector and may run into the next
	// cluster's data: decode exactly one cluster and ignore what follows.
	switch im.compression {
	case compressionZstd:
		d := zstdDecoders.Get().(*zstd.Decoder)
		defer zstdDecoders.Put(d)
		if err := d.Reset(bytes.NewReader(in)); err != nil {
			return nil, fmt.Errorf("%w: zstd cluster: %v", ErrCorrupt, err)
		}
		if _, err := io.ReadFull(d, out); err != nil {
			return nil, fmt.Errorf("%w: zstd cluster at %#x: %v", ErrCorrupt, host, err)
		}
	default:
		fr := flate.NewReader(bytes.NewReader(in))
		defer fr.Close()
		if _, err := io.ReadFull(fr, out); err != nil {
			return nil, fmt.Errorf("%w: deflate cluster at %#x: %v", ErrCorrupt, host, err)
		}
	}
	return out, nil
}

func errOr(err, fallback error) error {
	if err != nil {
		return err
	}
	return fallback
}
