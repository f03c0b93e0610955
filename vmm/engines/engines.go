// Package engines picks the VM engine a sandbox runs on, from the user's
// settings and what this machine has. It is the only package that knows
// every engine.
package engines

import (
	"context"
	"fmt"
	"runtime"
	"sync"

	"github.com/torkbot/sandbox/vmm"
	"github.com/torkbot/sandbox/vmm/krun"
	"github.com/torkbot/sandbox/vmm/qemu"
)

// Settings are the user's engine choices and the environment of the boot()
// call they were read from (docs/settings.md). Nothing here reads this
// process's environment: inside Node it is the copy taken when the addon
// loaded, and the caller passes the one of the moment.
type Settings struct {
	Engine string // SANDBOX_ENGINE: "", "qemu" or "krun"
	Accel  string // SANDBOX_ACCEL: "", "tcg", "kvm" or "hvf"
	QEMU   string // SANDBOX_QEMU: path of the QEMU binary, or ""
	// KrunHelper is SANDBOX_KRUN_HELPER: the sandbox-krun executable, or ""
	// to use the one the platform package ships.
	KrunHelper string
	// KrunLibrary is SANDBOX_LIBKRUN: the libkrun library to load, or "" for
	// the system's libkrun.so.1 / libkrun.dylib.
	KrunLibrary string
	// ProbeCacheDir keeps accelerator probe verdicts across processes
	// (SANDBOX_CACHE_DIR).
	ProbeCacheDir string
	// Path is $PATH: where QEMU and sandbox-krun are looked for.
	Path string
	// Env is the whole environment ("KEY=value") the engines' probe
	// processes get.
	Env []string
	// TempDir is $TMPDIR, for the probes' temporary files.
	TempDir string
}

// selection is what an engine is set up for: the settings that pick and
// find it (not the environment its probes ran with) and the guest it probed.
type selection struct {
	engine, accel, qemu, krunHelper, krunLibrary, probeCacheDir, path string
	kernel, initrd                                                    string
}

func selectionOf(s Settings, kernel, initrd string) selection {
	return selection{s.Engine, s.Accel, s.QEMU, s.KrunHelper, s.KrunLibrary, s.ProbeCacheDir, s.Path, kernel, initrd}
}

// Selected is an engine and the accelerator its machines run with.
type Selected struct {
	vmm.Engine
	Accel string
}

// Selector picks engines and keeps them: an engine's setup (finding QEMU,
// probing KVM by booting the kernel, loading libkrun in the helper) is paid
// once per kernel and initrd.
//
// Picking: SANDBOX_ENGINE=krun or qemu is obeyed (a failure is the error);
// otherwise libkrun when its helper runs, the library loads and the
// hypervisor is usable, else QEMU. SANDBOX_ACCEL is a QEMU setting: with it
// and no SANDBOX_ENGINE, QEMU is picked.
type Selector struct {
	// NewKrun and NewQEMU, when set, replace the engines' constructors, so
	// tests can drive every branch without libkrun or QEMU. Nil means
	// krun.New and qemu.New.
	NewKrun func(ctx context.Context, opts krun.Options) (vmm.Engine, error)
	NewQEMU func(ctx context.Context, opts qemu.Options, kernel, initrd string) (e vmm.Engine, accel string, err error)

	mu     sync.Mutex
	chosen map[selection]Selected
}

// Select returns the engine for settings, set up for kernel and initrd.
func (s *Selector) Select(ctx context.Context, settings Settings, kernel, initrd string) (Selected, error) {
	switch settings.Engine {
	case "", "qemu", "krun":
	default:
		return Selected{}, fmt.Errorf("SANDBOX_ENGINE=%q is not an engine (want krun or qemu)", settings.Engine)
	}
	key := selectionOf(settings, kernel, initrd)
	s.mu.Lock()
	defer s.mu.Unlock()
	if e, ok := s.chosen[key]; ok {
		return e, nil
	}
	var (
		sel Selected
		err error
	)
	switch {
	case settings.Engine == "krun":
		if sel, err = s.krun(ctx, settings, kernel, initrd); err != nil {
			err = fmt.Errorf("SANDBOX_ENGINE=krun: %w", err)
		}
	case settings.Engine == "qemu" || settings.Accel != "":
		sel, err = s.qemu(ctx, settings, kernel, initrd)
	default:
		var krunErr error
		if sel, krunErr = s.krun(ctx, settings, kernel, initrd); krunErr != nil {
			// libkrun is the better engine but an optional one: its
			// absence is normal, and QEMU serves. Should QEMU be missing
			// too, both reasons are told.
			if sel, err = s.qemu(ctx, settings, kernel, initrd); err != nil {
				err = fmt.Errorf("no VM engine works here: %w; and libkrun: %v", err, krunErr)
			}
		}
	}
	if err != nil {
		return Selected{}, err
	}
	if s.chosen == nil {
		s.chosen = make(map[selection]Selected)
	}
	s.chosen[key] = sel
	return sel, nil
}

func (s *Selector) krun(ctx context.Context, settings Settings, kernel, initrd string) (Selected, error) {
	newKrun := s.NewKrun
	if newKrun == nil {
		newKrun = func(ctx context.Context, opts krun.Options) (vmm.Engine, error) { return krun.New(ctx, opts) }
	}
	e, err := newKrun(ctx, krun.Options{
		Helper: settings.KrunHelper, Library: settings.KrunLibrary, Kernel: kernel, Initrd: initrd,
		ProbeCacheDir: settings.ProbeCacheDir, Path: settings.Path, Env: settings.Env, TempDir: settings.TempDir,
	})
	if err != nil {
		return Selected{}, err
	}
	accel := qemu.AccelKVM
	if runtime.GOOS == "darwin" {
		accel = qemu.AccelHVF
	}
	return Selected{Engine: e, Accel: accel}, nil
}

func (s *Selector) qemu(ctx context.Context, settings Settings, kernel, initrd string) (Selected, error) {
	newQEMU := s.NewQEMU
	if newQEMU == nil {
		newQEMU = func(ctx context.Context, opts qemu.Options, kernel, initrd string) (vmm.Engine, string, error) {
			e, err := qemu.New(ctx, opts, kernel, initrd)
			if err != nil {
				return nil, "", err
			}
			return e, e.Accel(), nil
		}
	}
	e, accel, err := newQEMU(ctx, qemu.Options{
		Binary: settings.QEMU, Accel: settings.Accel, ProbeCacheDir: settings.ProbeCacheDir,
		Path: settings.Path, Env: settings.Env,
	}, kernel, initrd)
	if err != nil {
		return Selected{}, err
	}
	return Selected{Engine: e, Accel: accel}, nil
}
