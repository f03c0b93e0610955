//go:build cgo

package main

import (
	"errors"
	"fmt"
	"os"

	"golang.org/x/sys/unix"
)

// KVM ioctls (linux/kvm.h).
const (
	kvmGetAPIVersion = 0xAE00
	kvmCreateVM      = 0xAE01
	kvmAPIVersion    = 12
)

// checkHypervisor checks that /dev/kvm exists, opens, speaks the stable API
// and creates a VM: what libkrun needs first. It cannot tell a KVM that
// creates VMs but cannot run a guest (some nested setups); docs/engine-krun.md.
func checkHypervisor() error {
	f, err := os.OpenFile("/dev/kvm", os.O_RDWR|unix.O_CLOEXEC, 0)
	switch {
	case errors.Is(err, os.ErrNotExist):
		return fmt.Errorf("/dev/kvm does not exist: enable virtualization (VT-x/AMD-V) in the firmware and load the kvm_intel or kvm_amd module, or use SANDBOX_ENGINE=qemu")
	case errors.Is(err, os.ErrPermission):
		return fmt.Errorf("cannot open /dev/kvm: permission denied: add your user to the kvm group (sudo usermod -aG kvm $USER, then log in again), or use SANDBOX_ENGINE=qemu")
	case err != nil:
		return fmt.Errorf("cannot open /dev/kvm: %v; use SANDBOX_ENGINE=qemu", err)
	}
	defer f.Close()
	v, err := unix.IoctlRetInt(int(f.Fd()), kvmGetAPIVersion)
	if err != nil || v != kvmAPIVersion {
		return fmt.Errorf("/dev/kvm answers API version %d (%v), want %d; use SANDBOX_ENGINE=qemu", v, err, kvmAPIVersion)
	}
	vm, err := unix.IoctlRetInt(int(f.Fd()), kvmCreateVM)
	if err != nil {
		return fmt.Errorf("/dev/kvm cannot create a VM: %v (is another hypervisor holding VT-x, e.g. VirtualBox?); use SANDBOX_ENGINE=qemu", err)
	}
	unix.Close(vm)
	return nil
}
