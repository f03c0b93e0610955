package qcow2_test

import (
	"bytes"
	"errors"
	"math/rand/v2"
	"os"
	"path/filepath"
	"testing"

	"github.com/torkbot/sandbox/vmm/vmmtest"

	"github.com/torkbot/sandbox/blockstore/qcow2"
	"github.com/torkbot/sandbox/internal/testutil"
)

// rawImage writes a raw disk with random, zero and compressible regions.
func rawImage(t *testing.T, size int) []byte {
	t.Helper()
	rng := rand.New(rand.NewPCG(1, 2))
	data := make([]byte, size)
	for off := 0; off < size; off += 64 << 10 {
		end := min(size, off+64<<10)
		switch (off / (64 << 10)) % 4 {
		case 0: // random, incompressible
			for i := off; i < end; i++ {
				data[i] = byte(rng.Uint32())
			}
		case 1: // zeros: unallocated after convert
		case 2: // compressible text
			for i := off; i < end; i++ {
				data[i] = "sandbox "[i%8]
			}
		case 3: // half random, half zero
			for i := off; i < off+(end-off)/2; i++ {
				data[i] = byte(rng.Uint32())
			}
		}
	}
	return data
}

func openFile(t *testing.T, path string) *qcow2.Image {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	st, err := f.Stat()
	if err != nil {
		t.Fatal(err)
	}
	im, err := qcow2.Open(f, st.Size())
	if err != nil {
		t.Fatalf("Open(%s): %v", path, err)
	}
	return im
}

func compareAll(t *testing.T, im *qcow2.Image, want []byte) {
	t.Helper()
	if im.Size() != int64(len(want)) {
		t.Fatalf("Size() = %d, want %d", im.Size(), len(want))
	}
	got := make([]byte, len(want))
	if n, err := im.ReadAt(got, 0); n != len(want) || err != nil {
		t.Fatalf("ReadAt all: n=%d err=%v", n, err)
	}
	if !bytes.Equal(got, want) {
		for i := range got {
			if got[i] != want[i] {
				t.Fatalf("first difference at byte %d", i)
			}
		}
	}
	// Unaligned reads crossing cluster boundaries.
	rng := rand.New(rand.NewPCG(3, 4))
	for range 200 {
		off := rng.IntN(len(want))
		n := rng.IntN(min(len(want)-off, 200<<10)) + 1
		buf := make([]byte, n)
		if _, err := im.ReadAt(buf, int64(off)); err != nil && off+n < len(want) {
			t.Fatalf("ReadAt(%d, %d): %v", off, n, err)
		}
		if !bytes.Equal(buf, want[off:off+n]) {
			t.Fatalf("ReadAt(%d, %d) differs", off, n)
		}
	}
}

func TestDecodeAgainstQemuImg(t *testing.T) {
	testutil.Need(t, "qemu-img", "qemu-utils")
	dir := t.TempDir()
	const size = 5<<20 + 64<<10
	raw := rawImage(t, size)
	rawPath := filepath.Join(dir, "disk.raw")
	if err := os.WriteFile(rawPath, raw, 0o644); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		args []string
	}{
		{"plain", []string{"-O", "qcow2"}},
		{"zlib", []string{"-c", "-O", "qcow2", "-o", "compression_type=zlib"}},
		{"zstd", []string{"-c", "-O", "qcow2", "-o", "compression_type=zstd"}},
		{"zstd-4k-clusters", []string{"-c", "-O", "qcow2", "-o", "compression_type=zstd,cluster_size=4096"}},
		{"zlib-2m-clusters", []string{"-c", "-O", "qcow2", "-o", "cluster_size=2M"}},
		{"v2", []string{"-O", "qcow2", "-o", "compat=0.10"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			out := filepath.Join(dir, tc.name+".qcow2")
			testutil.Run(t, "qemu-img", append(append([]string{"convert", "-f", "raw"}, tc.args...), rawPath, out)...)
			compareAll(t, openFile(t, out), raw)
		})
	}
}

func TestEmptyImageReadsZeros(t *testing.T) {
	testutil.Need(t, "qemu-img", "qemu-utils")
	path := filepath.Join(t.TempDir(), "empty.qcow2")
	testutil.Run(t, "qemu-img", "create", "-f", "qcow2", path, "3M")
	compareAll(t, openFile(t, path), make([]byte, 3<<20))
}

func TestBackingFileRefused(t *testing.T) {
	testutil.Need(t, "qemu-img", "qemu-utils")
	dir := t.TempDir()
	base := filepath.Join(dir, "base.qcow2")
	testutil.Run(t, "qemu-img", "create", "-f", "qcow2", base, "1M")
	top := filepath.Join(dir, "top.qcow2")
	testutil.Run(t, "qemu-img", "create", "-f", "qcow2", "-b", base, "-F", "qcow2", top)
	f, err := os.Open(top)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	st, _ := f.Stat()
	if _, err := qcow2.Open(f, st.Size()); !errors.Is(err, qcow2.ErrBackingFile) {
		t.Fatalf("Open = %v, want ErrBackingFile", err)
	}
}

func TestNotQcow2(t *testing.T) {
	data := make([]byte, 4096)
	if _, err := qcow2.Open(bytes.NewReader(data), int64(len(data))); !errors.Is(err, qcow2.ErrNotQcow2) {
		t.Fatalf("Open = %v, want ErrNotQcow2", err)
	}
}

// TestBuiltInImage compares the shipped base image with qemu-img's decoding.
func TestBuiltInImage(t *testing.T) {
	testutil.Need(t, "qemu-img", "qemu-utils")
	path := filepath.Join(vmmtest.Artifacts(t), "images/debian-13-slim.qcow2")
	if testing.Short() {
		t.Skip("-short: skips decoding the whole built-in image")
	}
	rawPath := filepath.Join(t.TempDir(), "debian.raw")
	testutil.Run(t, "qemu-img", "convert", "-O", "raw", path, rawPath)
	want, err := os.ReadFile(rawPath)
	if err != nil {
		t.Fatal(err)
	}
	compareAll(t, openFile(t, path), want)
}
