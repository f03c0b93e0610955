package lane

import (
	"context"
	"fmt"
	"net"
	"os"

	"github.com/torkbot/sandbox/blockstore/nbd"
	"github.com/torkbot/sandbox/blockstore/qcow2"
	"github.com/torkbot/sandbox/vmm"
)

// rootDisk is a built-in image decoded for the guest's root disk.
type rootDisk struct {
	file  *os.File
	image *qcow2.Image
}

func openRoot(d vmm.Disk) (*rootDisk, error) {
	if d.Format != "qcow2" {
		return nil, fmt.Errorf("root disk %s: format %q is not served (want qcow2)", d.Path, d.Format)
	}
	if !d.ReadOnly {
		return nil, fmt.Errorf("root disk %s: writable roots need a block store", d.Path)
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
	return &rootDisk{file: f, image: img}, nil
}

// Close releases the image file; nil-safe for lanes that failed to boot.
func (r *rootDisk) Close() {
	if r != nil {
		r.file.Close()
	}
}

// serveRoot serves the image read-only as the NBD export "root" on conn,
// the host end of the socket pair the VMM's NBD client uses.
func serveRoot(ctx context.Context, conn *os.File, root *rootDisk) error {
	defer conn.Close()
	c, err := net.FileConn(conn)
	if err != nil {
		return err
	}
	return nbd.Serve(ctx, c, nbd.ReaderAtDevice{R: root.image, N: root.image.Size()}, nbd.Options{Name: "root", ReadOnly: true})
}
