//go:build linux

// Command init is the kernel floor's PID 1 (bench/kernelfloor): it writes one
// line to the console and resets the VM at once, so that a boot with it costs
// what the VMM and the kernel cost and nothing else.
package main

import (
	"os"

	"golang.org/x/sys/unix"
)

func main() {
	// The line bench/kernelfloor waits for.
	os.Stdout.WriteString("kernelfloor: init reached\n")
	// A reset, as sandbox-init ends a VM (sandbox-init/shutdown.go): our
	// kernel has no ACPI to power off with, and QEMU ends on a reset.
	unix.Reboot(unix.LINUX_REBOOT_CMD_RESTART)
}
