package qcow2_test

import (
	"bytes"
	"encoding/binary"
	"testing"

	"github.com/torkbot/sandbox/blockstore/qcow2"
)

// seedImage builds a tiny valid v3 image: 512-byte clusters, 4 KiB disk, one
// L2 table with one data cluster.
func seedImage() []byte {
	const cs = 512
	img := make([]byte, 5*cs)
	be := binary.BigEndian
	be.PutUint32(img[0:], 0x514649fb)
	be.PutUint32(img[4:], 3)
	be.PutUint32(img[20:], 9)                       // cluster_bits
	be.PutUint64(img[24:], 4096)                    // size
	be.PutUint32(img[36:], 1)                       // l1_size
	be.PutUint64(img[40:], 1*cs)                    // l1_table_offset
	be.PutUint32(img[96:], 4)                       // refcount_order
	be.PutUint32(img[100:], 112)                    // header_length
	be.PutUint64(img[cs:], 2*cs)                    // L1[0] -> L2 at cluster 2
	be.PutUint64(img[2*cs:], 3*cs)                  // L2[0] -> data at cluster 3
	be.PutUint64(img[2*cs+8:], 1)                   // L2[1] zero cluster
	be.PutUint64(img[2*cs+16:], 1<<62|uint64(4*cs)) // L2[2] compressed
	for i := range cs {
		img[3*cs+i] = byte(i)
	}
	return img
}

func FuzzOpen(f *testing.F) {
	f.Add(seedImage())
	f.Fuzz(func(t *testing.T, data []byte) {
		im, err := qcow2.Open(bytes.NewReader(data), int64(len(data)))
		if err != nil {
			return
		}
		size := im.Size()
		buf := make([]byte, 4096)
		for _, off := range []int64{0, 512, 1000, size / 2, size - 1} {
			if off < 0 {
				continue
			}
			im.ReadAt(buf, off)
		}
	})
}

func TestSeedImage(t *testing.T) {
	img := seedImage()
	im, err := qcow2.Open(bytes.NewReader(img), int64(len(img)))
	if err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 512)
	if _, err := im.ReadAt(buf, 0); err != nil || buf[5] != 5 {
		t.Fatalf("ReadAt = %v, buf[5]=%d", err, buf[5])
	}
	if _, err := im.ReadAt(buf, 1024); err == nil {
		t.Fatal("corrupt compressed cluster read without error")
	}
}
