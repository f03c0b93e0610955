//go:build linux

package main

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"time"

	"golang.org/x/sys/unix"

	"github.com/torkbot/sandbox/bootparams"
)

// How long processes get to exit after SIGTERM, and after SIGKILL.
const (
	termGrace = 2 * time.Second
	killGrace = 2 * time.Second
)

// stopGuest ends every process but init, detaches the host filesystems,
// syncs, and remounts the root read-only, which also commits its journal.
// It is the guest's shutdown, whether the host asked for it or the control
// channel was lost.
func stopGuest(log *console, hostMounts []bootparams.Mount) error {
	if left := signalAllAndWait(unix.SIGTERM, termGrace); len(left) > 0 {
		log.logf("%d processes left after SIGTERM: killing them", len(left))
		if left := signalAllAndWait(unix.SIGKILL, killGrace); len(left) > 0 {
			// Stuck in the kernel (D state); sync anyway.
			log.logf("processes %v survived SIGKILL", left)
		}
	}
	unmountHostFilesystems(hostMounts, log)
	unix.Sync()
	if err := unix.Mount("", "/", "", unix.MS_REMOUNT|unix.MS_RDONLY, ""); err != nil {
		return fmt.Errorf("remount / read-only: %w", err)
	}
	return nil
}

// signalAllAndWait sends sig to every process but init and waits up to
// timeout for them to be gone. It returns the pids still alive.
func signalAllAndWait(sig unix.Signal, timeout time.Duration) []int {
	// pid -1: every process init may signal, except itself.
	if err := unix.Kill(-1, sig); err == unix.ESRCH {
		return nil
	}
	deadline := time.Now().Add(timeout)
	for {
		left := userProcesses()
		if len(left) == 0 || time.Now().After(deadline) {
			return left
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// userProcesses lists the live processes other than init: kernel threads
// (kthreadd, pid 2, and its children) and zombies, which the reaper
// collects, do not count.
func userProcesses() []int {
	stats, _ := filepath.Glob("/proc/[0-9]*/stat")
	var pids []int
	for _, path := range stats {
		pid, _ := strconv.Atoi(filepath.Base(filepath.Dir(path)))
		if pid == 1 || pid == 2 {
			continue
		}
		b, err := os.ReadFile(path)
		if err != nil {
			continue // exited meanwhile
		}
		// After the parenthesised command name, which may hold anything:
		// state ppid ...
		i := bytes.LastIndexByte(b, ')')
		if i < 0 {
			continue
		}
		fields := bytes.Fields(b[i+1:])
		if len(fields) < 2 || string(fields[0]) == "Z" || string(fields[1]) == "2" {
			continue
		}
		pids = append(pids, pid)
	}
	return pids
}

// powerOff syncs and ends the VM. It does not return.
//
// It resets the machine rather than powering it off: the guest kernel has no
// ACPI, so it has no way to power off (reboot(POWER_OFF) would only halt the
// CPUs and leave the VMM running), while both engines end the VM on a reset
// (QEMU runs with -no-reboot; libkrun exits), which the kernel does by the
// method reboot= on the engine's command line names.
func powerOff(log *console) {
	log.logf("powering off")
	unix.Sync()
	err := unix.Reboot(unix.LINUX_REBOOT_CMD_RESTART)
	// Exiting PID 1 panics the kernel, and panic=-1 resets: still better
	// than hanging.
	log.logf("reset failed: %v; exiting", err)
	os.Exit(1)
}
