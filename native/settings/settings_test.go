package settings_test

import (
	"encoding/json"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/torkbot/sandbox/native/settings"
)

// A request as src/settings.ts sends it becomes the engines' settings, the
// lane's timeout, console file and CA file, and the children's environment.
func TestResolve(t *testing.T) {
	var r settings.Request
	err := json.Unmarshal([]byte(`{
		"engine": "krun", "accel": "tcg", "qemu": "/q", "libkrun": "/l", "krunHelper": "/h",
		"bootTimeoutMs": "1500", "consoleOutput": "/c.log", "debug": "1", "cacheDir": "/cache",
		"extraCaCerts": "/ca.pem", "tmpdir": "/tmp/x", "path": "/bin:/usr/bin",
		"env": {"PATH": "/bin:/usr/bin", "TMPDIR": "/tmp/x", "A": "1"}}`), &r)
	if err != nil {
		t.Fatal(err)
	}
	s, err := r.Resolve()
	if err != nil {
		t.Fatal(err)
	}
	e := s.Engines
	if e.Engine != "krun" || e.Accel != "tcg" || e.QEMU != "/q" || e.KrunLibrary != "/l" || e.KrunHelper != "/h" ||
		e.ProbeCacheDir != "/cache" || e.Path != "/bin:/usr/bin" || e.TempDir != "/tmp/x" {
		t.Errorf("engine settings %+v", e)
	}
	wantEnv := []string{"A=1", "PATH=/bin:/usr/bin", "TMPDIR=/tmp/x"}
	if !slices.Equal(s.Env, wantEnv) || !slices.Equal(e.Env, wantEnv) {
		t.Errorf("environment %q / %q, want %q (sorted)", s.Env, e.Env, wantEnv)
	}
	if s.BootTimeout != 1500*time.Millisecond || s.ConsoleOutput != "/c.log" || !s.Debug || s.ExtraCACerts != "/ca.pem" || s.TempDir != "/tmp/x" {
		t.Errorf("settings %+v", s)
	}
}

func TestResolveDefaults(t *testing.T) {
	s, err := settings.Request{TempDir: "/tmp"}.Resolve()
	if err != nil {
		t.Fatal(err)
	}
	if s.BootTimeout != settings.DefaultBootTimeout || s.Debug || s.Env == nil || len(s.Env) != 0 || s.Engines.Engine != "" {
		t.Errorf("defaults %+v", s)
	}
}

func TestResolveRejects(t *testing.T) {
	for _, tc := range []struct {
		r    settings.Request
		want string
	}{
		{settings.Request{TempDir: "/tmp", BootTimeoutMs: "soon"}, `SANDBOX_BOOT_TIMEOUT_MS="soon" is not a positive number of milliseconds`},
		{settings.Request{TempDir: "/tmp", BootTimeoutMs: "0"}, `SANDBOX_BOOT_TIMEOUT_MS="0"`},
		{settings.Request{TempDir: "/tmp", BootTimeoutMs: "-5"}, `SANDBOX_BOOT_TIMEOUT_MS="-5"`},
		{settings.Request{}, "carries no temporary directory"},
	} {
		if _, err := tc.r.Resolve(); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%+v: error %v, want %q", tc.r, err, tc.want)
		}
	}
}
