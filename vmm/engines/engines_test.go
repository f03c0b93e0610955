package engines_test

import (
	"errors"
	"runtime"
	"strings"
	"testing"

	"github.com/torkbot/sandbox/vmm/engines"
	"github.com/torkbot/sandbox/vmm/qemu"
)

func TestSelect(t *testing.T) {
	fakeQEMU := "/bin/true" // exists; only looked up, never run with a forced accelerator
	for _, tc := range []struct {
		name      string
		settings  engines.Settings
		wantAccel string
		wantErr   string
		wantIs    error
	}{
		{name: "qemu forced to tcg", settings: engines.Settings{Engine: "qemu", Accel: "tcg", QEMU: fakeQEMU}, wantAccel: "tcg"},
		{name: "default engine, kvm forced", settings: engines.Settings{Accel: "kvm", QEMU: fakeQEMU}, wantAccel: "kvm"},
		{name: "krun is not built in", settings: engines.Settings{Engine: "krun"}, wantErr: "libkrun engine is not part of this build"},
		{name: "unknown engine", settings: engines.Settings{Engine: "firecracker"}, wantErr: `"firecracker" is not an engine`},
		{name: "unknown accelerator", settings: engines.Settings{Accel: "whpx", QEMU: fakeQEMU}, wantErr: `unknown accelerator "whpx"`},
		{name: "missing QEMU", settings: engines.Settings{Accel: "tcg", QEMU: "/nonexistent/qemu"}, wantIs: qemu.ErrNotInstalled},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var s engines.Selector
			sel, err := s.Select(t.Context(), tc.settings, "/k", "/i")
			switch {
			case tc.wantErr != "" || tc.wantIs != nil:
				if err == nil {
					t.Fatalf("no error, selected %v", sel)
				}
				if !strings.Contains(err.Error(), tc.wantErr) || (tc.wantIs != nil && !errors.Is(err, tc.wantIs)) {
					t.Errorf("error %q, want one containing %q (is %v)", err, tc.wantErr, tc.wantIs)
				}
			case err != nil:
				t.Fatal(err)
			case sel.Accel != tc.wantAccel || sel.Name() != "qemu":
				t.Errorf("selected %s/%s, want qemu/%s", sel.Name(), sel.Accel, tc.wantAccel)
			}
		})
	}
}

func TestSelectHVFNeedsMacOS(t *testing.T) {
	if runtime.GOOS == "darwin" {
		t.Skip("hvf is valid on macOS")
	}
	var s engines.Selector
	if _, err := s.Select(t.Context(), engines.Settings{Accel: "hvf", QEMU: "/bin/true"}, "/k", "/i"); err == nil || !strings.Contains(err.Error(), "needs macOS") {
		t.Errorf("hvf on %s: %v", runtime.GOOS, err)
	}
}

func TestSelectKeepsEngines(t *testing.T) {
	var s engines.Selector
	settings := engines.Settings{Accel: "tcg", QEMU: "/bin/true"}
	a, err := s.Select(t.Context(), settings, "/k", "/i")
	if err != nil {
		t.Fatal(err)
	}
	b, _ := s.Select(t.Context(), settings, "/k", "/i")
	c, _ := s.Select(t.Context(), settings, "/k", "/other-initrd")
	if a.Engine != b.Engine {
		t.Error("same settings and kernel: engine set up twice")
	}
	if a.Engine == c.Engine {
		t.Error("another initrd: engine reused (its probe booted a different guest)")
	}
}
