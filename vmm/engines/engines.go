// Package engines picks the VM engine a sandbox runs on, from the user's
// settings and what this machine has. It is the only package that knows
// every engine.
package engines

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"sync"

	"github.com/torkbot/sandbox/vmm"
	"github.com/torkbot/sandbox/vmm/qemu"
)

// Settings are the user's engine choices, normally from the environment.
type Settings struct {
	Engine string // SANDBOX_ENGINE: "", "qemu" or "krun"
	Accel  string // SANDBOX_ACCEL: "", "tcg", "kvm" or "hvf"
	QEMU   string // SANDBOX_QEMU: path of the QEMU binary, or ""
	// ProbeCacheDir keeps accelerator probe verdicts across processes.
	ProbeCacheDir string
}

// SettingsFromEnv reads Settings from the process environment.
func SettingsFromEnv() Settings {
	s := Settings{Engine: os.Getenv("SANDBOX_ENGINE"), Accel: os.Getenv("SANDBOX_ACCEL"), QEMU: os.Getenv("SANDBOX_QEMU")}
	if dir, err := os.UserCacheDir(); err == nil {
		s.ProbeCacheDir = filepath.Join(dir, "torkbot-sandbox")
	}
	return s
}

// Selected is an engine and the accelerator its machines run with.
type Selected struct {
	vmm.Engine
	Accel string
}

// Selector picks engines and keeps them: an engine's setup (finding QEMU,
// probing KVM by booting the kernel) is paid once per kernel and initrd.
type Selector struct {
	mu     sync.Mutex
	chosen map[selection]Selected
}

type selection struct {
	settings       Settings
	kernel, initrd string
}

// Select returns the engine for settings, set up for kernel and initrd.
func (s *Selector) Select(ctx context.Context, settings Settings, kernel, initrd string) (Selected, error) {
	switch settings.Engine {
	case "", "qemu":
	case "krun":
		return Selected{}, fmt.Errorf("SANDBOX_ENGINE=krun: the libkrun engine is not part of this build; unset SANDBOX_ENGINE or set it to qemu")
	default:
		return Selected{}, fmt.Errorf("SANDBOX_ENGINE=%q is not an engine (want krun or qemu)", settings.Engine)
	}
	key := selection{settings, kernel, initrd}
	s.mu.Lock()
	defer s.mu.Unlock()
	if e, ok := s.chosen[key]; ok {
		return e, nil
	}
	e, err := qemu.New(ctx, qemu.Options{Binary: settings.QEMU, Accel: settings.Accel, ProbeCacheDir: settings.ProbeCacheDir}, kernel, initrd)
	if err != nil {
		return Selected{}, err
	}
	if s.chosen == nil {
		s.chosen = make(map[selection]Selected)
	}
	sel := Selected{Engine: e, Accel: e.Accel()}
	s.chosen[key] = sel
	return sel, nil
}
