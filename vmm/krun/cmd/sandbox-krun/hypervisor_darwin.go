//go:build cgo

package main

import (
	"fmt"

	"golang.org/x/sys/unix"
)

// checkHypervisor checks that Hypervisor.framework is available. Whether
// this binary carries the com.apple.security.hypervisor entitlement shows
// only when libkrun creates the VM: it then fails with HV_DENIED, which
// krunHint turns into "run setup-macos".
func checkHypervisor() error {
	v, err := unix.SysctlUint32("kern.hv_support")
	if err != nil || v != 1 {
		return fmt.Errorf("this Mac does not support Hypervisor.framework (kern.hv_support=%d, %v): Apple silicon or a VT-x Intel Mac on macOS 11+ is needed; use SANDBOX_ENGINE=qemu", v, err)
	}
	return nil
}
