// Command kernelfloor measures the kernel floor that `npm run bench` sets the
// library's cold boot against: the VM the QEMU engine starts for a sandbox
// (same machine, devices, vCPUs and memory: the engine builds the command
// line), with an initrd whose init only writes one line to the console and
// resets (bench/kernelfloor/init). What is left is QEMU starting, loading
// the kernel and the kernel booting to init: the least a boot can cost with
// that kernel. It boots our kernel and, for comparison, Debian's, one after
// the other, and prints {"ours": [ms, ...], "distro": [ms, ...]}: the wall
// time from starting QEMU to the line on the console.
package main

import (
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"sync"
	"syscall"
	"time"

	"github.com/torkbot/sandbox/vmm"
	"github.com/torkbot/sandbox/vmm/qemu"
)

// initLine is what bench/kernelfloor/init writes.
const initLine = "kernelfloor: init reached"

func main() {
	kernel := flag.String("kernel", "", "our vmlinux")
	distro := flag.String("distro-kernel", "", "Debian's vmlinux (kernel/distro.sh)")
	initrd := flag.String("initrd", "", "initrd holding bench/kernelfloor/init")
	image := flag.String("image", "", "root disk (qcow2), attached as a sandbox's is")
	boots := flag.Int("boots", 5, "boots of each kernel")
	cpus := flag.Int("cpus", 1, "vCPUs (the library's default)")
	memory := flag.Int("memory", 512, "MiB of memory (the library's default)")
	flag.Parse()
	out, err := run(*kernel, *distro, *initrd, *image, *boots, *cpus, *memory)
	if err != nil {
		fmt.Fprintln(os.Stderr, "kernelfloor:", err)
		os.Exit(1)
	}
	json.NewEncoder(os.Stdout).Encode(out)
}

type result struct {
	Ours   []float64 `json:"ours"`
	Distro []float64 `json:"distro"`
}

func run(kernel, distro, initrd, image string, boots, cpus, memory int) (result, error) {
	ctx := context.Background()
	engine, err := qemu.New(ctx, qemu.Options{Accel: os.Getenv("SANDBOX_ACCEL"), Path: os.Getenv("PATH"), Env: os.Environ()}, kernel, initrd)
	if err != nil {
		return result{}, err
	}
	var out result
	// Alternating, so that both kernels see the same load on a busy machine.
	for range boots {
		for _, k := range []struct {
			path string
			into *[]float64
		}{{kernel, &out.Ours}, {distro, &out.Distro}} {
			ms, err := boot(ctx, engine, vmm.Spec{
				Kernel: k.path, Initrd: initrd, CPUs: cpus, MemoryMiB: memory,
				RootDisk: vmm.Disk{Path: image, Format: "qcow2", ReadOnly: true},
				Env:      os.Environ(), TempDir: os.TempDir(),
			})
			if err != nil {
				return result{}, fmt.Errorf("%s: %w", k.path, err)
			}
			*k.into = append(*k.into, ms)
		}
	}
	return out, nil
}

// boot starts one VM with a control channel, as the library's has, and
// returns the milliseconds until init's line shows on the console.
func boot(ctx context.Context, engine vmm.Engine, spec vmm.Spec) (float64, error) {
	fds, err := syscall.Socketpair(syscall.AF_UNIX, syscall.SOCK_STREAM|syscall.SOCK_CLOEXEC, 0)
	if err != nil {
		return 0, err
	}
	host := os.NewFile(uintptr(fds[0]), "control-host")
	defer host.Close()
	spec.Channels = []vmm.Channel{{Name: "control", Conn: os.NewFile(uintptr(fds[1]), "control-guest")}}
	console := &lineWatch{want: []byte(initLine), seen: make(chan struct{})}
	spec.Console = console
	started := time.Now()
	vm, err := engine.Start(ctx, spec)
	if err != nil {
		return 0, err
	}
	defer func() {
		select {
		case <-vm.Done():
		case <-time.After(10 * time.Second):
			vm.Kill()
			<-vm.Done()
		}
	}()
	select {
	case <-console.seen:
		ms, _ := console.seenAt(started)
		return ms, nil
	case <-vm.Done():
		// The reset ends QEMU at once: its last console bytes may still
		// be on their way.
		select {
		case <-console.seen:
			ms, _ := console.seenAt(started)
			return ms, nil
		case <-time.After(time.Second):
		}
		return 0, fmt.Errorf("the VM ended before init's line; console:\n%s", console.text())
	case <-time.After(2 * time.Minute):
		vm.Kill()
		return 0, fmt.Errorf("no init line within 2 minutes; console:\n%s", console.text())
	}
}

// lineWatch keeps the console and closes seen once want shows in it.
type lineWatch struct {
	mu   sync.Mutex
	buf  bytes.Buffer
	want []byte
	seen chan struct{}
	done bool
	at   time.Time // when want showed
}

func (w *lineWatch) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.buf.Len() < 1<<20 {
		w.buf.Write(p)
	}
	if !w.done && bytes.Contains(w.buf.Bytes(), w.want) {
		w.done, w.at = true, time.Now()
		close(w.seen)
	}
	return len(p), nil
}

// seenAt returns the milliseconds from started to the line, if it showed.
func (w *lineWatch) seenAt(started time.Time) (float64, bool) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return float64(w.at.Sub(started).Microseconds()) / 1e3, w.done
}

func (w *lineWatch) text() string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.buf.String()
}
