package krun

import (
	"errors"
	"fmt"
	"os"
)

// KVM is the hypervisor device as the helper's pre-flight check sees it.
// The real one is HostKVM; tests inject the states a host can be in (no
// device, a device that cannot create VMs, a usable one) with
// vmm/krun/kvmtest, so the check and everything after it are tested
// whatever this machine has.
type KVM interface {
	// Open opens the device read-write. Errors wrap os.ErrNotExist or
	// os.ErrPermission when that is the cause.
	Open() (KVMHandle, error)
	// Name is the device's name in error messages.
	Name() string
}

// KVMHandle is an open KVM device. Close releases it.
type KVMHandle interface {
	// APIVersion is KVM_GET_API_VERSION's answer.
	APIVersion() (int, error)
	// CreateVM makes a VM (KVM_CREATE_VM) and destroys it again.
	CreateVM() error
	Close() error
}

// kvmAPIVersion is the only KVM API version there is (linux/kvm.h).
const kvmAPIVersion = 12

// CheckKVM checks what libkrun needs first: the device exists, opens, speaks
// the stable API and creates a VM. Its errors say what to do. It cannot tell
// a KVM that creates VMs but cannot run a guest (some nested setups); the
// engine's boot probe does (docs/engine-krun.md).
func CheckKVM(k KVM) error {
	dev := k.Name()
	h, err := k.Open()
	switch {
	case errors.Is(err, os.ErrNotExist):
		return fmt.Errorf("%s does not exist: enable virtualization (VT-x/AMD-V) in the firmware and load the kvm_intel or kvm_amd module, or use SANDBOX_ENGINE=qemu", dev)
	case errors.Is(err, os.ErrPermission):
		return fmt.Errorf("cannot open %s: permission denied: add your user to the kvm group (sudo usermod -aG kvm $USER, then log in again), or use SANDBOX_ENGINE=qemu", dev)
	case err != nil:
		return fmt.Errorf("cannot open %s: %v; use SANDBOX_ENGINE=qemu", dev, err)
	}
	defer h.Close()
	if v, err := h.APIVersion(); err != nil || v != kvmAPIVersion {
		return fmt.Errorf("%s answers API version %d (%v), want %d; use SANDBOX_ENGINE=qemu", dev, v, err, kvmAPIVersion)
	}
	if err := h.CreateVM(); err != nil {
		return fmt.Errorf("%s cannot create a VM: %v (is another hypervisor holding VT-x, e.g. VirtualBox?); use SANDBOX_ENGINE=qemu", dev, err)
	}
	return nil
}
