package krun

import (
	"os"

	"golang.org/x/sys/unix"
)

// HostKVM is the KVM device file at Path ("" means /dev/kvm).
type HostKVM struct{ Path string }

var _ KVM = HostKVM{}

// Name implements KVM.
func (k HostKVM) Name() string {
	if k.Path == "" {
		return "/dev/kvm"
	}
	return k.Path
}

// Open implements KVM.
func (k HostKVM) Open() (KVMHandle, error) {
	f, err := os.OpenFile(k.Name(), os.O_RDWR|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, err
	}
	return kvmFile{f}, nil
}

// KVM ioctls (linux/kvm.h).
const (
	kvmGetAPIVersion = 0xAE00
	kvmCreateVM      = 0xAE01
)

type kvmFile struct{ f *os.File }

func (k kvmFile) APIVersion() (int, error) {
	return unix.IoctlRetInt(int(k.f.Fd()), kvmGetAPIVersion)
}

func (k kvmFile) CreateVM() error {
	vm, err := unix.IoctlRetInt(int(k.f.Fd()), kvmCreateVM)
	if err != nil {
		return err
	}
	return unix.Close(vm)
}

func (k kvmFile) Close() error { return k.f.Close() }
