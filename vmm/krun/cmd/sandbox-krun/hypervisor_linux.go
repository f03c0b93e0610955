//go:build cgo

package main

import "github.com/torkbot/sandbox/vmm/krun"

// checkHypervisor checks the KVM device libkrun will use (krun.CheckKVM).
func checkHypervisor() error {
	k, err := hostKVM()
	if err != nil {
		return err
	}
	return krun.CheckKVM(k)
}
