package qemu

import (
	"bytes"
	"context"
	"os"
	"sync"
	"time"

	"github.com/torkbot/sandbox/vmm"
)

// kvmProbeTimeout bounds the KVM probe. A usable KVM reaches the guest's
// init in well under a second; a broken nested KVM hangs right after
// real-mode setup (shared/reference/vm-boot-spike) and never gets there.
const kvmProbeTimeout = 4 * time.Second

// kvmBootMarker is what the kernel prints (at loglevel 7) when it hands
// over to the initrd's /init: the probe's proof that the guest booted.
const kvmBootMarker = "Run /init as init process"

// chooseAccel answers whether KVM can boot this kernel here: the KVM
// device (opts.KVM, /dev/kvm) must open, and a real boot of the kernel with
// -accel kvm must reach /init within kvmProbeTimeout. Otherwise TCG. The
// verdict is kept per process and, when opts.ProbeCacheDir is set, on disk
// (vmm.ProbeCache).
func chooseAccel(ctx context.Context, binary, kernel, initrd string, opts Options) string {
	dev := opts.KVM
	if dev == "" {
		dev = "/dev/kvm"
	}
	f, err := os.OpenFile(dev, os.O_RDWR, 0)
	if err != nil {
		return AccelTCG
	}
	f.Close()
	cache := vmm.ProbeCache{Dir: opts.ProbeCacheDir, Kind: "accel"}
	key := cache.Key(binary, kernel, initrd)
	if v, ok := cache.Load(key); ok && (v == AccelKVM || v == AccelTCG) {
		return v
	}
	accel := AccelTCG
	if kvmBoots(ctx, binary, kernel, initrd, opts.Env) {
		accel = AccelKVM
	}
	if ctx.Err() == nil {
		cache.Store(key, accel)
	}
	return accel
}

func kvmBoots(ctx context.Context, binary, kernel, initrd string, env []string) bool {
	ctx, cancel := context.WithTimeout(ctx, kvmProbeTimeout)
	defer cancel()
	cmd := vmm.Command(env, binary,
		"-nodefaults", "-no-user-config", "-display", "none", "-no-reboot",
		"-accel", "kvm", "-cpu", "host", "-M", Machine, "-m", "128", "-smp", "1",
		"-kernel", kernel, "-initrd", initrd,
		// Not quiet: the marker is a loglevel-7 message. The probe kills
		// the guest as soon as it shows.
		"-append", "console=ttyS0 loglevel=7 panic=-1",
		"-chardev", "stdio,id=console,signal=off", "-serial", "chardev:console",
	)
	var out lockedBuffer
	cmd.Stdout = &out
	cmd.Stderr = &out
	if err := vmm.StartChild(cmd); err != nil {
		return false
	}
	exited := make(chan struct{})
	go func() { cmd.Wait(); close(exited) }()
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for {
		select {
		case <-tick.C:
			if out.Contains(kvmBootMarker) {
				cmd.Process.Kill()
				<-exited
				return true
			}
		case <-exited:
			return out.Contains(kvmBootMarker)
		case <-ctx.Done():
			cmd.Process.Kill()
			<-exited
			return false
		}
	}
}

type lockedBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *lockedBuffer) Contains(s string) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	return bytes.Contains(b.buf.Bytes(), []byte(s))
}
