// Package settings turns the settings a boot request carries into what the
// engines and the lane take. TypeScript reads them from process.env at the
// boot() call (src/settings.ts) and sends them with every boot: the addon
// never reads its own environment, because inside Node that is the copy the
// Go runtime took when the addon was loaded, blind to anything set in
// process.env since. docs/settings.md lists every setting.
//
// settings_test.go also holds the check that keeps it so: no code the addon
// is built from may read the process environment.
package settings

import (
	"fmt"
	"maps"
	"slices"
	"strconv"
	"time"

	"github.com/torkbot/sandbox/vmm/engines"
)

// Request is the boot request's "settings": the variables of
// docs/settings.md as process.env had them at the boot() call, and that
// whole environment for the processes the addon starts.
type Request struct {
	Engine        string `json:"engine"`        // SANDBOX_ENGINE
	Accel         string `json:"accel"`         // SANDBOX_ACCEL
	QEMU          string `json:"qemu"`          // SANDBOX_QEMU
	Libkrun       string `json:"libkrun"`       // SANDBOX_LIBKRUN
	KrunHelper    string `json:"krunHelper"`    // SANDBOX_KRUN_HELPER
	BootTimeoutMs string `json:"bootTimeoutMs"` // SANDBOX_BOOT_TIMEOUT_MS, as written
	ConsoleOutput string `json:"consoleOutput"` // SANDBOX_CONSOLE_OUTPUT
	Debug         string `json:"debug"`         // SANDBOX_DEBUG
	// CacheDir is SANDBOX_CACHE_DIR, or its default under XDG_CACHE_HOME or
	// HOME, resolved by TypeScript.
	CacheDir     string `json:"cacheDir"`
	ExtraCACerts string `json:"extraCaCerts"` // NODE_EXTRA_CA_CERTS
	TempDir      string `json:"tmpdir"`       // os.tmpdir(): TMPDIR, else /tmp
	Path         string `json:"path"`         // PATH
	// Env is the whole of process.env: the environment of the VMM and of
	// the libkrun helper.
	Env map[string]string `json:"env"`
}

// DefaultBootTimeout bounds a boot unless SANDBOX_BOOT_TIMEOUT_MS says
// otherwise; generous because TCG on a loaded two-core machine boots in
// seconds, not milliseconds.
const DefaultBootTimeout = 60 * time.Second

// Settings are a request's settings, checked and in the form their users take.
type Settings struct {
	Engines       engines.Settings
	BootTimeout   time.Duration
	ConsoleOutput string // "" for none
	// Debug prints each boot's timeline on stderr (SANDBOX_DEBUG set and
	// not "0").
	Debug        bool
	ExtraCACerts string // a PEM file's path, or ""
	Env          []string
	TempDir      string
}

// Resolve checks r and derives the Settings. Its errors name the variable
// and what is wrong with its value.
func (r Request) Resolve() (Settings, error) {
	timeout := DefaultBootTimeout
	if r.BootTimeoutMs != "" {
		ms, err := strconv.Atoi(r.BootTimeoutMs)
		if err != nil || ms <= 0 {
			return Settings{}, fmt.Errorf("SANDBOX_BOOT_TIMEOUT_MS=%q is not a positive number of milliseconds", r.BootTimeoutMs)
		}
		timeout = time.Duration(ms) * time.Millisecond
	}
	if r.TempDir == "" {
		return Settings{}, fmt.Errorf("the boot request carries no temporary directory (settings.tmpdir): @torkbot/sandbox and its addon do not match")
	}
	env := make([]string, 0, len(r.Env))
	for _, k := range slices.Sorted(maps.Keys(r.Env)) {
		env = append(env, k+"="+r.Env[k])
	}
	return Settings{
		Engines: engines.Settings{
			Engine: r.Engine, Accel: r.Accel, QEMU: r.QEMU,
			KrunHelper: r.KrunHelper, KrunLibrary: r.Libkrun,
			ProbeCacheDir: r.CacheDir, Path: r.Path, Env: env, TempDir: r.TempDir,
		},
		BootTimeout:   timeout,
		ConsoleOutput: r.ConsoleOutput,
		Debug:         r.Debug != "" && r.Debug != "0",
		ExtraCACerts:  r.ExtraCACerts,
		Env:           env,
		TempDir:       r.TempDir,
	}, nil
}
