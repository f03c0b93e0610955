package nbd_test

import (
	"bytes"
	"context"
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"

	"github.com/torkbot/sandbox/blockstore"
	"github.com/torkbot/sandbox/blockstore/memstore"
	"github.com/torkbot/sandbox/blockstore/nbd"
	"github.com/torkbot/sandbox/blockstore/qcow2"
	"github.com/torkbot/sandbox/internal/testutil"
)

var _ nbd.Device = (*blockstore.Device)(nil)

// serveUnix serves dev on a fresh unix socket, one Serve per connection, and
// returns the nbd+unix URL.
func serveUnix(t *testing.T, dev nbd.Device, opts nbd.Options) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "nbd") // short: unix socket paths are limited
	if err != nil {
		t.Fatal(err)
	}
	sock := filepath.Join(dir, "s")
	ln, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Go(func() {
		for {
			conn, err := ln.Accept()
			if err != nil {
				return
			}
			wg.Go(func() {
				if err := nbd.Serve(ctx, conn, dev, opts); err != nil && ctx.Err() == nil {
					t.Errorf("Serve: %v", err)
				}
			})
		}
	})
	t.Cleanup(func() {
		cancel()
		ln.Close()
		wg.Wait()
		os.RemoveAll(dir)
	})
	return "nbd+unix:///" + opts.Name + "?socket=" + sock
}

func randomBytes(n int, seed uint64) []byte {
	rng := rand.New(rand.NewPCG(seed, 5))
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(rng.Uint32())
	}
	return b
}

// TestQemuImgReadsCOWDevice: a zstd qcow2 base decoded by our reader, under
// a COW device, served over NBD, read back by qemu-img equal to the base.
func TestQemuImgReadsCOWDevice(t *testing.T) {
	testutil.Need(t, "qemu-img", "qemu-utils")
	dir := t.TempDir()
	raw := randomBytes(3<<20, 1)
	clear(raw[1<<20 : 2<<20]) // a hole
	rawPath := filepath.Join(dir, "base.raw")
	if err := os.WriteFile(rawPath, raw, 0o644); err != nil {
		t.Fatal(err)
	}
	qPath := filepath.Join(dir, "base.qcow2")
	testutil.Run(t, "qemu-img", "convert", "-f", "raw", "-c", "-O", "qcow2", "-o", "compression_type=zstd", rawPath, qPath)
	f, err := os.Open(qPath)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	st, _ := f.Stat()
	img, err := qcow2.Open(f, st.Size())
	if err != nil {
		t.Fatal(err)
	}
	dev, err := blockstore.Open(context.Background(), img, img.Size(), memstore.New(4096), blockstore.Options{})
	if err != nil {
		t.Fatal(err)
	}
	for _, d := range []struct {
		dev nbd.Device
		ro  bool
	}{{dev, false}, {dev, true}, {nbd.ReaderAtDevice{R: img, N: img.Size()}, true}} {
		ro := d.ro
		url := serveUnix(t, d.dev, nbd.Options{Name: "root", ReadOnly: ro})
		info := testutil.Run(t, "qemu-img", "info", "--output=json", url)
		if !strings.Contains(info, `"virtual-size": `+strconv.Itoa(len(raw))) {
			t.Fatalf("qemu-img info: %s", info)
		}
		out := filepath.Join(dir, "out.raw")
		testutil.Run(t, "qemu-img", "convert", "-f", "raw", "-O", "raw", url, out)
		got, err := os.ReadFile(out)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got, raw) {
			t.Fatal("qemu-img convert over NBD differs from the base")
		}
	}
}

func TestReadOnlyExportRefusesWrites(t *testing.T) {
	testutil.Need(t, "qemu-io", "qemu-utils")
	base := randomBytes(1<<20, 2)
	st := memstore.New(4096)
	dev, err := blockstore.Open(context.Background(), bytes.NewReader(base), int64(len(base)), st, blockstore.Options{})
	if err != nil {
		t.Fatal(err)
	}
	url := serveUnix(t, dev, nbd.Options{ReadOnly: true})
	out, _ := exec.Command("qemu-io", "-f", "raw", "-c", "write -P 0x55 0 4k", "-c", "flush", url).CombinedOutput()
	// qemu refuses to open a read-only export read-write: EPERM at open.
	if low := bytes.ToLower(out); !bytes.Contains(low, []byte("read-only")) && !bytes.Contains(low, []byte("not permitted")) && !bytes.Contains(low, []byte("permission denied")) {
		t.Fatalf("write on read-only export: %s", out)
	}
	testutil.Run(t, "qemu-io", "-r", "-f", "raw", "-c", "read -P 0 0 0", url)
	if dev.Dirty() != 0 || len(st.Blocks()) != 0 {
		t.Fatal("read-only export was written")
	}
}

// TestQemuIOWritesKeepExt4Consistent: an ext4 base; qemu-io writes the
// changes debugfs made to a copy (so the result is a valid filesystem) plus
// random unaligned writes past the filesystem's end, with flushes, FUA and
// zero writes; then base + store must equal the expected image and pass
// e2fsck -fn, and a second Device opened on the store must see the writes.
func TestQemuIOWritesKeepExt4Consistent(t *testing.T) {
	testutil.Need(t, "qemu-io", "qemu-utils")
	testutil.Need(t, "mkfs.ext4", "e2fsprogs")
	testutil.Need(t, "e2fsck", "e2fsprogs")
	testutil.Need(t, "debugfs", "e2fsprogs")
	for _, blockSize := range []int{4096, 64 << 10} {
		t.Run(strconv.Itoa(blockSize), func(t *testing.T) {
			testExt4(t, blockSize)
		})
	}
}

func testExt4(t *testing.T, blockSize int) {
	dir := t.TempDir()
	const devSize, fsSize = 24 << 20, 16 << 20
	basePath := filepath.Join(dir, "base.img")
	if err := os.WriteFile(basePath, make([]byte, devSize), 0o644); err != nil {
		t.Fatal(err)
	}
	testutil.Run(t, "mkfs.ext4", "-q", "-F", "-b", "4096", basePath, "16M")
	base, err := os.ReadFile(basePath)
	if err != nil || len(base) != devSize {
		t.Fatalf("base image: %v, %d bytes", err, len(base))
	}

	// The target filesystem: the base with files added by debugfs.
	targetPath := filepath.Join(dir, "target.img")
	if err := os.WriteFile(targetPath, base, 0o644); err != nil {
		t.Fatal(err)
	}
	payload := filepath.Join(dir, "payload")
	if err := os.WriteFile(payload, randomBytes(300<<10, 3), 0o644); err != nil {
		t.Fatal(err)
	}
	cmds := filepath.Join(dir, "cmds")
	os.WriteFile(cmds, []byte("mkdir lane\nwrite "+payload+" lane/payload\nwrite "+payload+" big\nmkdir lane/sub\n"), 0o644)
	testutil.Run(t, "debugfs", "-w", "-f", cmds, targetPath)
	want, err := os.ReadFile(targetPath)
	if err != nil {
		t.Fatal(err)
	}

	// qemu-io commands: each changed 512-byte run of the target, from a file.
	var args []string
	for off := 0; off < devSize; {
		if bytes.Equal(base[off:off+512], want[off:off+512]) {
			off += 512
			continue
		}
		end := off + 512
		for end < devSize && !bytes.Equal(base[end:end+512], want[end:end+512]) {
			end += 512
		}
		src := filepath.Join(dir, fmt.Sprintf("run-%d", off))
		os.WriteFile(src, want[off:end], 0o644)
		args = append(args, "-c", fmt.Sprintf("write -q -s %s %d %d", src, off, end-off))
		off = end
	}
	if len(args) == 0 {
		t.Fatal("debugfs changed nothing")
	}
	// Random unaligned writes past the filesystem, some FUA, some zeroes.
	rng := rand.New(rand.NewPCG(7, 8))
	for i := range 200 {
		off := fsSize + rng.IntN(devSize-fsSize-70000)
		n := rng.IntN(70000) + 1
		switch i % 10 {
		case 3:
			args = append(args, "-c", fmt.Sprintf("write -q -z %d %d", off, n))
			clear(want[off : off+n])
		case 7:
			args = append(args, "-c", "flush")
			fallthrough
		default:
			pat := byte(rng.IntN(255) + 1)
			fua := ""
			if i%5 == 1 {
				fua = "-f "
			}
			args = append(args, "-c", fmt.Sprintf("write -q %s-P %d %d %d", fua, pat, off, n))
			for j := off; j < off+n; j++ {
				want[j] = pat
			}
		}
	}
	args = append(args, "-c", "flush")

	st := memstore.New(blockSize)
	dev, err := blockstore.Open(context.Background(), bytes.NewReader(base), devSize, st, blockstore.Options{MaxDirtyBytes: 512 << 10})
	if err != nil {
		t.Fatal(err)
	}
	url := serveUnix(t, dev, nbd.Options{Name: "root"})
	out := testutil.Run(t, "qemu-io", append([]string{"-f", "raw", "--cache=none"}, append(args, url)...)...)
	if strings.Contains(out, "failed") {
		t.Fatalf("qemu-io: %s", out)
	}
	if dev.Dirty() != 0 {
		t.Fatalf("%d bytes still dirty after flush", dev.Dirty())
	}

	// Base + store blocks, assembled without a Device.
	assembled := bytes.Clone(base)
	for b, data := range st.Blocks() {
		copy(assembled[int(b)*blockSize:], data)
	}
	if !bytes.Equal(assembled, want) {
		t.Fatal("base + store blocks differ from the expected image")
	}
	imgPath := filepath.Join(dir, "assembled.img")
	if err := os.WriteFile(imgPath, assembled[:fsSize], 0o644); err != nil {
		t.Fatal(err)
	}
	testutil.Run(t, "e2fsck", "-fn", imgPath)

	// A second Device on the same store sees the writes, also through NBD.
	dev2, err := blockstore.Open(context.Background(), bytes.NewReader(base), devSize, st, blockstore.Options{})
	if err != nil {
		t.Fatal(err)
	}
	url2 := serveUnix(t, dev2, nbd.Options{ReadOnly: true})
	outPath := filepath.Join(dir, "second.raw")
	testutil.Run(t, "qemu-img", "convert", "-f", "raw", "-O", "raw", url2, outPath)
	got, err := os.ReadFile(outPath)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want) {
		t.Fatal("second device does not see the writes")
	}
}

// TestNbdcopy: libnbd's nbdinfo and nbdcopy (a second, independent client
// implementation) read a COW device back, write a whole image into it with
// requests in flight, and the store then holds exactly that image.
func TestNbdcopy(t *testing.T) {
	testutil.Need(t, "nbdcopy", "libnbd-bin")
	testutil.Need(t, "nbdinfo", "libnbd-bin")
	dir := t.TempDir()
	const size = 8 << 20
	base := randomBytes(size, 11)
	st := memstore.New(4096)
	dev, err := blockstore.Open(context.Background(), bytes.NewReader(base), size, st, blockstore.Options{MaxDirtyBytes: 1 << 20})
	if err != nil {
		t.Fatal(err)
	}
	url := serveUnix(t, dev, nbd.Options{Name: "root"})
	if info := testutil.Run(t, "nbdinfo", "--json", url); !strings.Contains(info, `"export-size": `+strconv.Itoa(size)) {
		t.Fatalf("nbdinfo: %s", info)
	}
	out := filepath.Join(dir, "out.raw")
	testutil.Run(t, "nbdcopy", url, out)
	if got, _ := os.ReadFile(out); !bytes.Equal(got, base) {
		t.Fatal("nbdcopy read differs from the base")
	}
	want := randomBytes(size, 12)
	clear(want[2<<20 : 3<<20]) // zeros: nbdcopy may send them as WRITE_ZEROES
	src := filepath.Join(dir, "src.raw")
	if err := os.WriteFile(src, want, 0o644); err != nil {
		t.Fatal(err)
	}
	testutil.Run(t, "nbdcopy", "--flush", src, url)
	if dev.Dirty() != 0 {
		t.Fatalf("%d bytes dirty after nbdcopy --flush", dev.Dirty())
	}
	assembled := bytes.Clone(base)
	for b, data := range st.Blocks() {
		copy(assembled[int(b)*4096:], data)
	}
	if !bytes.Equal(assembled, want) {
		t.Fatal("base + store differ from what nbdcopy wrote")
	}
}
