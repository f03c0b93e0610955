// Command disk is the baseline of the root disk figures in `npm run bench`
// (bench/run.mjs): the same guest (QEMU engine, kernel, initrd, built-in
// image) with QEMU opening the qcow2 itself instead of our NBD server,
// running the same shell workloads over the control channel.
//
// -mode=ro attaches the image read-only, as a built-in root;
// -mode=overlay attaches a fresh writable qcow2 overlay over it (QEMU's own
// copy-on-write on a local file, created in a temp dir and removed after),
// the guest mounting its root read-write, as a COW root.
//
// It boots once, then reads one JSON [name, script] per line from stdin,
// runs the script with sh -c and answers with one JSON line
// {"name", "result"} (the script's last stdout line), until stdin ends: so
// bench/run.mjs can interleave its runs with the library's, the two VMs
// seeing the same load.
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"

	"github.com/torkbot/sandbox/bootparams"
	"github.com/torkbot/sandbox/control"
	"github.com/torkbot/sandbox/vmm"
	"github.com/torkbot/sandbox/vmm/qemu"
	"github.com/torkbot/sandbox/vmm/vmmtest"
)

func main() {
	kernel, initrd, image := vmmtest.GuestFlags()
	mode := flag.String("mode", "ro", "ro or overlay")
	flag.Parse()
	if err := run(*kernel, *initrd, *image, *mode); err != nil {
		fmt.Fprintln(os.Stderr, "disk:", err)
		os.Exit(1)
	}
}

func run(kernel, initrd, image, mode string) error {
	ctx := context.Background()
	disk := vmm.Disk{Path: image, Format: "qcow2", ReadOnly: true}
	var boot bootparams.Params
	switch mode {
	case "ro":
	case "overlay":
		dir, err := os.MkdirTemp("", "bench-disk-")
		if err != nil {
			return err
		}
		defer os.RemoveAll(dir)
		abs, err := filepath.Abs(image)
		if err != nil {
			return err
		}
		overlay := filepath.Join(dir, "overlay.qcow2")
		if out, err := exec.Command("qemu-img", "create", "-q", "-f", "qcow2", "-b", abs, "-F", "qcow2", overlay).CombinedOutput(); err != nil {
			return fmt.Errorf("qemu-img create: %v: %s", err, out)
		}
		disk = vmm.Disk{Path: overlay, Format: "qcow2"}
		boot.RootWritable = true
	default:
		return fmt.Errorf("unknown -mode %q (want ro or overlay)", mode)
	}
	engine, err := qemu.New(ctx, qemu.Options{Accel: os.Getenv("SANDBOX_ACCEL"), Path: os.Getenv("PATH"), Env: os.Environ()}, kernel, initrd)
	if err != nil {
		return err
	}
	g, err := vmmtest.Boot(ctx, engine, vmm.Spec{
		Kernel: kernel, Initrd: initrd, CPUs: 1, MemoryMiB: 512, Boot: boot,
		RootDisk: disk,
	})
	if err != nil {
		return err
	}
	defer g.Close()
	client := g.Client
	in := json.NewDecoder(os.Stdin)
	out := json.NewEncoder(os.Stdout)
	for {
		var w [2]string
		if err := in.Decode(&w); err == io.EOF {
			break
		} else if err != nil {
			return fmt.Errorf("reading a workload: %w", err)
		}
		var stdout, stderr strings.Builder
		code, err := client.Run(ctx, control.Command{Name: "sh", Args: []string{"-c", w[1]}}, func(fd control.FD, b []byte) {
			if fd == control.Stdout {
				stdout.Write(b)
			} else {
				stderr.Write(b)
			}
		})
		if err != nil || code != 0 {
			return fmt.Errorf("%s: exit %d: %v: %s", w[0], code, err, stderr.String())
		}
		lines := strings.Split(strings.TrimSpace(stdout.String()), "\n")
		if err := out.Encode(map[string]string{"name": w[0], "result": lines[len(lines)-1]}); err != nil {
			return err
		}
	}
	return nil
}
