package vmm_test

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/torkbot/sandbox/vmm"
)

func TestValidate(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "f")
	os.WriteFile(file, nil, 0o644)
	good := vmm.Spec{Kernel: file, Initrd: file, CPUs: 1, MemoryMiB: 128, RootDisk: vmm.Disk{Path: file, Format: "qcow2"},
		Channels: []vmm.Channel{{Name: "control"}, {Name: "fs.0"}, {Name: strings.Repeat("a", 64)}}}
	if err := good.Validate(); err != nil {
		t.Fatalf("valid spec: %v", err)
	}
	for _, tc := range []struct {
		name string
		edit func(*vmm.Spec)
		want string
	}{
		{"no vCPUs", func(s *vmm.Spec) { s.CPUs = 0 }, "0 vCPUs is out of range 1..255"},
		{"too many vCPUs", func(s *vmm.Spec) { s.CPUs = 256 }, "out of range 1..255"},
		{"tiny memory", func(s *vmm.Spec) { s.MemoryMiB = 32 }, "too little to boot"},
		{"unknown format", func(s *vmm.Spec) { s.RootDisk.Format = "vmdk" }, `unsupported disk format "vmdk"`},
		{"NIC MTU", func(s *vmm.Spec) { s.NIC, s.NICMTU = os.Stdin, 67 }, "NIC MTU 67"},
		{"missing kernel", func(s *vmm.Spec) { s.Kernel = filepath.Join(dir, "nope") }, "no such file"},
		{"no disk path", func(s *vmm.Spec) { s.RootDisk.Path = "" }, "are required"},
		// QEMU's option syntax and the kernel command line both split on these.
		{"comma", func(s *vmm.Spec) { s.Channels[0].Name = "a,b" }, `invalid channel name "a,b"`},
		{"equals", func(s *vmm.Spec) { s.Channels[0].Name = "a=b" }, "invalid channel name"},
		{"space", func(s *vmm.Spec) { s.Channels[0].Name = "a b" }, "invalid channel name"},
		{"unnamed", func(s *vmm.Spec) { s.Channels[0].Name = "" }, "invalid channel name"},
		{"too long", func(s *vmm.Spec) { s.Channels[0].Name = strings.Repeat("a", 65) }, "invalid channel name"},
		{"twice", func(s *vmm.Spec) { s.Channels[1].Name = "control" }, `channel "control" given twice`},
	} {
		s := good
		s.Channels = append([]vmm.Channel(nil), good.Channels...)
		tc.edit(&s)
		if err := s.Validate(); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: error %v, want %q", tc.name, err, tc.want)
		}
	}
	// Over NBD the VMM opens no image: no path or format needed.
	nbd := good
	nbd.RootDisk = vmm.Disk{NBD: os.Stdin}
	if err := nbd.Validate(); err != nil {
		t.Errorf("NBD root: %v", err)
	}
}
