package engines_test

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"testing"

	"github.com/torkbot/sandbox/vmm"
	"github.com/torkbot/sandbox/vmm/engines"
	"github.com/torkbot/sandbox/vmm/krun"
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
		{name: "krun forced, helper missing", settings: engines.Settings{Engine: "krun", KrunHelper: "/nonexistent/sandbox-krun"}, wantErr: "SANDBOX_ENGINE=krun: krun: helper executable sandbox-krun not found", wantIs: krun.ErrHelperNotFound},
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
	s := engines.Selector{NewKrun: noKrun}
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

// noKrun stands for a machine where libkrun does not load.
func noKrun(context.Context, krun.Options) (vmm.Engine, error) {
	return nil, errors.New("krun: libkrun cannot run VMs here: cannot load libkrun.so.1")
}

type fakeEngine string

func (f fakeEngine) Name() string { return string(f) }
func (f fakeEngine) Start(context.Context, vmm.Spec) (vmm.Machine, error) {
	return nil, errors.New("fake")
}

// TestSelectBranches drives every selection branch with both engines'
// constructors injected: which engine results, and which error.
func TestSelectBranches(t *testing.T) {
	krunOK := func(_ context.Context, opts krun.Options) (vmm.Engine, error) {
		if opts.Kernel != "/k" || opts.Helper != "/h" || opts.Library != "/l" {
			return nil, errors.New("options not passed through")
		}
		return fakeEngine("krun"), nil
	}
	krunNoKVM := func(context.Context, krun.Options) (vmm.Engine, error) {
		return nil, errors.New("krun: libkrun cannot run VMs here: /dev/kvm does not exist")
	}
	qemuOK := func(_ context.Context, opts qemu.Options, _, _ string) (vmm.Engine, string, error) {
		accel := opts.Accel
		if accel == "" {
			accel = "tcg"
		}
		return fakeEngine("qemu"), accel, nil
	}
	qemuMissing := func(context.Context, qemu.Options, string, string) (vmm.Engine, string, error) {
		return nil, "", qemu.ErrNotInstalled
	}
	hv := "kvm"
	if runtime.GOOS == "darwin" {
		hv = "hvf"
	}
	base := engines.Settings{KrunHelper: "/h", KrunLibrary: "/l"}
	with := func(f func(*engines.Settings)) engines.Settings { s := base; f(&s); return s }
	for _, tc := range []struct {
		name      string
		settings  engines.Settings
		krun      func(context.Context, krun.Options) (vmm.Engine, error)
		qemu      func(context.Context, qemu.Options, string, string) (vmm.Engine, string, error)
		want      string // engine/accel
		wantErr   []string
		wantErrIs error
	}{
		{name: "default: libkrun usable", settings: base, krun: krunOK, qemu: qemuOK, want: "krun/" + hv},
		{name: "default: libkrun unusable, QEMU", settings: base, krun: krunNoKVM, qemu: qemuOK, want: "qemu/tcg"},
		{name: "default: neither", settings: base, krun: krunNoKVM, qemu: qemuMissing,
			wantErr: []string{"no VM engine works here", "system emulator not found", "/dev/kvm does not exist"}, wantErrIs: qemu.ErrNotInstalled},
		{name: "krun forced and usable", settings: with(func(s *engines.Settings) { s.Engine = "krun" }), krun: krunOK, qemu: qemuOK, want: "krun/" + hv},
		{name: "krun forced, unusable: no fallback", settings: with(func(s *engines.Settings) { s.Engine = "krun" }), krun: krunNoKVM, qemu: qemuOK,
			wantErr: []string{"SANDBOX_ENGINE=krun", "/dev/kvm does not exist"}},
		{name: "qemu forced though libkrun works", settings: with(func(s *engines.Settings) { s.Engine = "qemu" }), krun: krunOK, qemu: qemuOK, want: "qemu/tcg"},
		{name: "accelerator set: QEMU", settings: with(func(s *engines.Settings) { s.Accel = "kvm" }), krun: krunOK, qemu: qemuOK, want: "qemu/kvm"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := engines.Selector{NewKrun: tc.krun, NewQEMU: tc.qemu}
			sel, err := s.Select(t.Context(), tc.settings, "/k", "/i")
			if tc.wantErr != nil {
				if err == nil {
					t.Fatalf("selected %s/%s, want an error", sel.Name(), sel.Accel)
				}
				for _, w := range tc.wantErr {
					if !strings.Contains(err.Error(), w) {
						t.Errorf("error %q lacks %q", err, w)
					}
				}
				if tc.wantErrIs != nil && !errors.Is(err, tc.wantErrIs) {
					t.Errorf("error %q is not %v", err, tc.wantErrIs)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got := sel.Name() + "/" + sel.Accel; got != tc.want {
				t.Errorf("selected %s, want %s", got, tc.want)
			}
		})
	}
}

// TestSelectUsesCallersEnvironment: QEMU is looked up on the PATH the
// settings carry (the boot() call's), never this process's; the
// environment and temp dir reach the engines' probes; and an engine set up
// for one PATH is not reused for another.
func TestSelectUsesCallersEnvironment(t *testing.T) {
	withQEMU := t.TempDir()
	if err := os.WriteFile(filepath.Join(withQEMU, "qemu-system-x86_64"), []byte("#!/bin/sh\nexit 1\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	if runtime.GOARCH == "amd64" {
		var s engines.Selector
		sel, err := s.Select(t.Context(), engines.Settings{Accel: "tcg", Path: "/nonexistent:" + withQEMU}, "/k", "/i")
		if err != nil || sel.Name() != "qemu" {
			t.Errorf("QEMU on the settings' PATH: %v", err)
		}
		_, err = s.Select(t.Context(), engines.Settings{Accel: "tcg", Path: t.TempDir()}, "/k", "/i")
		if !errors.Is(err, qemu.ErrNotInstalled) || !strings.Contains(err.Error(), "is not on PATH") {
			t.Errorf("no QEMU on the settings' PATH: %v", err)
		}
	}

	var gotKrun krun.Options
	var gotQEMU qemu.Options
	qemuCalls := 0
	s := engines.Selector{
		NewKrun: func(_ context.Context, opts krun.Options) (vmm.Engine, error) {
			gotKrun = opts
			return nil, errors.New("krun: libkrun cannot run VMs here")
		},
		NewQEMU: func(_ context.Context, opts qemu.Options, _, _ string) (vmm.Engine, string, error) {
			gotQEMU = opts
			qemuCalls++
			return fakeEngine("qemu"), "tcg", nil
		},
	}
	settings := engines.Settings{Path: "/p", Env: []string{"A=1", "PATH=/p"}, TempDir: "/t", ProbeCacheDir: "/c"}
	if _, err := s.Select(t.Context(), settings, "/k", "/i"); err != nil {
		t.Fatal(err)
	}
	if gotKrun.Path != "/p" || gotKrun.TempDir != "/t" || gotKrun.ProbeCacheDir != "/c" || !slices.Equal(gotKrun.Env, settings.Env) {
		t.Errorf("libkrun's options %+v lack the settings' environment", gotKrun)
	}
	if gotQEMU.Path != "/p" || gotQEMU.ProbeCacheDir != "/c" || !slices.Equal(gotQEMU.Env, settings.Env) {
		t.Errorf("QEMU's options %+v lack the settings' environment", gotQEMU)
	}
	// Another environment alone: the engine is kept. Another PATH: set up again.
	settings.Env = []string{"B=2"}
	s.Select(t.Context(), settings, "/k", "/i")
	if qemuCalls != 1 {
		t.Errorf("QEMU set up %d times for one PATH", qemuCalls)
	}
	settings.Path = "/q"
	s.Select(t.Context(), settings, "/k", "/i")
	if qemuCalls != 2 {
		t.Errorf("another PATH reused the engine found on the first")
	}
}
