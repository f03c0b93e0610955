// Package kvmtest stands in for the KVM device in tests: each State is one
// way a host's /dev/kvm can be, so the libkrun engine's checks and its
// contract with libkrun are tested the same on a machine without KVM, with
// a nested KVM that cannot run guests, and with a working one.
package kvmtest

import (
	"fmt"
	"io/fs"
	"syscall"

	"github.com/torkbot/sandbox/vmm/krun"
)

// States a KVM device can be in.
const (
	Absent     = "absent"  // no device node
	Denied     = "denied"  // a node this user cannot open
	OldAPI     = "old-api" // opens, but answers another API version
	NoVMs      = "no-vms"  // opens, speaks the API, cannot create a VM
	Usable     = "usable"  // creates VMs
	deviceName = "/dev/kvm (stand-in)"
)

// States lists every state.
var States = []string{Absent, Denied, OldAPI, NoVMs, Usable}

// New returns a KVM in state, or an error naming the states.
func New(state string) (krun.KVM, error) {
	for _, s := range States {
		if s == state {
			return device(state), nil
		}
	}
	return nil, fmt.Errorf("kvmtest: unknown KVM state %q (want one of %v)", state, States)
}

type device string

func (d device) Name() string { return deviceName }

func (d device) Open() (krun.KVMHandle, error) {
	switch d {
	case Absent:
		return nil, &fs.PathError{Op: "open", Path: deviceName, Err: fs.ErrNotExist}
	case Denied:
		return nil, &fs.PathError{Op: "open", Path: deviceName, Err: fs.ErrPermission}
	}
	return handle(d), nil
}

type handle string

func (h handle) APIVersion() (int, error) {
	if h == OldAPI {
		return 11, nil
	}
	return 12, nil
}

func (h handle) CreateVM() error {
	if h == NoVMs {
		return syscall.EBUSY
	}
	return nil
}

func (h handle) Close() error { return nil }
