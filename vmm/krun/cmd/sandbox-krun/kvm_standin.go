//go:build cgo && linux && krun_standin

package main

import (
	"os"

	"github.com/torkbot/sandbox/vmm/krun"
	"github.com/torkbot/sandbox/vmm/krun/kvmtest"
)

// hostKVM, in the helper the engine's tests build (-tags krun_standin) to
// run against the stand-in libkrun, is a stand-in KVM device in the state
// KRUN_STANDIN_KVM names (default usable), whatever this machine has: the
// tests set it like they set the stand-in library's KRUN_STANDIN_FAIL.
func hostKVM() (krun.KVM, error) {
	state := os.Getenv("KRUN_STANDIN_KVM")
	if state == "" {
		state = kvmtest.Usable
	}
	return kvmtest.New(state)
}
