package vmm

import (
	"errors"
	"fmt"
	"os"
	"strings"
)

// Validate checks a spec against what every engine can run, before any
// process starts: vCPU and memory bounds, the disk format, the NIC's MTU,
// channel names, and that the files the VMM opens exist. An engine wraps the
// error with its name; it may refuse more (krun reserves its disk channel's
// name).
//
// Channel names are 1 to 64 of A-Za-z0-9._- and unique: QEMU splices them
// into its comma-separated option syntax (virtserialport name=) and libkrun
// maps them to vsock ports through the kernel command line
// (sandbox.channels=), so a name with ',', '=' or white space would change
// either.
func (s Spec) Validate() error {
	switch {
	case s.CPUs < 1 || s.CPUs > 255:
		// QEMU's microvm and krun_set_vm_config (a uint8) both stop at 255.
		return fmt.Errorf("%d vCPUs is out of range 1..255", s.CPUs)
	case s.MemoryMiB < 64:
		return fmt.Errorf("%d MiB of memory is too little to boot (at least 64)", s.MemoryMiB)
	case s.RootDisk.NBD == nil && s.RootDisk.Format != "qcow2" && s.RootDisk.Format != "raw":
		return fmt.Errorf("unsupported disk format %q (want qcow2 or raw)", s.RootDisk.Format)
	case s.NIC != nil && (s.NICMTU < 68 || s.NICMTU > 65535):
		return fmt.Errorf("NIC MTU %d is out of range 68..65535", s.NICMTU)
	}
	seen := map[string]bool{}
	for _, ch := range s.Channels {
		if !validChannelName(ch.Name) {
			return fmt.Errorf("invalid channel name %q (1-64 of A-Za-z0-9._-)", ch.Name)
		}
		if seen[ch.Name] {
			return fmt.Errorf("channel %q given twice", ch.Name)
		}
		seen[ch.Name] = true
	}
	files := []string{s.Kernel, s.Initrd}
	if s.RootDisk.NBD == nil {
		files = append(files, s.RootDisk.Path)
	}
	for _, p := range files {
		if p == "" {
			return errors.New("a kernel, an initrd and (without NBD) a disk path are required")
		}
		if _, err := os.Stat(p); err != nil {
			return err
		}
	}
	return nil
}

func validChannelName(name string) bool {
	return name != "" && len(name) <= 64 &&
		strings.Trim(name, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-") == ""
}

// Close closes every fd the spec hands to the engine (channels, NIC, NBD
// disk): what an engine does when Start fails before the VMM holds its own
// copies, keeping the ownership contract of Spec.
func (s Spec) Close() {
	for _, ch := range s.Channels {
		if ch.Conn != nil {
			ch.Conn.Close()
		}
	}
	if s.NIC != nil {
		s.NIC.Close()
	}
	if s.RootDisk.NBD != nil {
		s.RootDisk.NBD.Close()
	}
}

// ExtraFiles are the files a VMM child inherits. Add gives each its fd
// number in the child as it is appended, so the number written into the
// VMM's arguments and the file's place in exec.Cmd.ExtraFiles (whose entry
// i becomes fd 3+i) cannot drift apart.
type ExtraFiles struct {
	files []*os.File
}

// Add appends f and returns its fd number in the child.
func (x *ExtraFiles) Add(f *os.File) int {
	x.files = append(x.files, f)
	return 2 + len(x.files)
}

// Files is the list for exec.Cmd.ExtraFiles.
func (x *ExtraFiles) Files() []*os.File { return x.files }

// Close closes this process's copies: once the child has its own (or never
// will), so that the host end of each socket sees EOF when the VMM exits.
func (x *ExtraFiles) Close() {
	for _, f := range x.files {
		f.Close()
	}
}
