//go:build !amd64

package qemu

// HostTSCKHz is 0 where the host has no x86 time stamp counter. The QEMU
// engine runs only on x86_64 hosts (qemuArch), so this exists only so that
// the package, and vmm/engines with it, compiles for other architectures
// (the darwin/arm64 cross-build check of scripts/test.sh).
func HostTSCKHz() uint64 { return 0 }
