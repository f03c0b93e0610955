package qemu

import (
	"context"
	"os"

	"github.com/torkbot/sandbox/vmm"
)

// chooseAccel answers whether KVM can boot this kernel here: the KVM
// device (opts.KVM, /dev/kvm) must open, and a real boot of the kernel with
// -accel kvm must reach /init (vmm.ProbeBoot). Otherwise TCG. The verdict
// is kept per process and, when opts.ProbeCacheDir is set, on disk
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
	booted, _, _ := vmm.ProbeBoot(ctx, vmm.Command(env, binary,
		"-nodefaults", "-no-user-config", "-display", "none", "-no-reboot",
		"-accel", "kvm", "-cpu", "host", "-M", Machine, "-m", "128", "-smp", "1",
		"-kernel", kernel, "-initrd", initrd,
		// Not quiet: vmm.InitMarker is a loglevel-7 message.
		"-append", "console=ttyS0 loglevel=7 panic=-1",
		"-chardev", "stdio,id=console,signal=off", "-serial", "chardev:console",
	))
	return booted
}
