// Package vmmtest finds the guest artifacts scripts/build.sh builds (kernel,
// initrd, built-in images), for tests that boot real VMs.
package vmmtest

import (
	"os"
	"path/filepath"
	"runtime"
	"testing"
)

// Artifacts is the platform package's artifacts directory of this checkout:
// kernel/vmlinux, kernel/initrd.cpio, images/*.qcow2. It skips the test,
// saying how to build them, when they are not built.
func Artifacts(t testing.TB) string {
	t.Helper()
	_, file, _, _ := runtime.Caller(0)
	dir := filepath.Join(filepath.Dir(file), "../../platform-packages/linux-x64-gnu/artifacts")
	if _, err := os.Stat(filepath.Join(dir, "kernel/initrd.cpio")); err != nil {
		t.Skipf("guest artifacts not built (run scripts/build.sh): %v", err)
	}
	return dir
}
