package krun_test

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"

	"github.com/torkbot/sandbox/vmm/krun"
	"github.com/torkbot/sandbox/vmm/krun/kvmtest"
)

// kvmWant is what CheckKVM says for each injected state.
var kvmWant = map[string]string{
	kvmtest.Absent: "/dev/kvm (stand-in) does not exist: enable virtualization",
	kvmtest.Denied: "cannot open /dev/kvm (stand-in): permission denied: add your user to the kvm group",
	kvmtest.OldAPI: "/dev/kvm (stand-in) answers API version 11 (<nil>), want 12",
	kvmtest.NoVMs:  "/dev/kvm (stand-in) cannot create a VM: device or resource busy",
	kvmtest.Usable: "",
}

// TestCheckKVM: every state a host's KVM can be in maps to its message,
// and every failure names the fallback engine.
func TestCheckKVM(t *testing.T) {
	for _, state := range kvmtest.States {
		t.Run(state, func(t *testing.T) {
			k, err := kvmtest.New(state)
			if err != nil {
				t.Fatal(err)
			}
			err = krun.CheckKVM(k)
			want := kvmWant[state]
			switch {
			case want == "" && err != nil:
				t.Errorf("usable KVM: %v", err)
			case want != "" && (err == nil || !strings.Contains(err.Error(), want) || !strings.Contains(err.Error(), "SANDBOX_ENGINE=qemu")):
				t.Errorf("error %v, want one containing %q and naming SANDBOX_ENGINE=qemu", err, want)
			}
		})
	}
}

// TestHostKVM: the real device code on device files this test picks: a path
// that does not exist, and a character device that is not KVM (present but
// unusable, like a KVM whose ioctls fail).
func TestHostKVM(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("KVM is Linux's")
	}
	missing := filepath.Join(t.TempDir(), "kvm")
	if err := krun.CheckKVM(krun.HostKVM{Path: missing}); err == nil || !strings.Contains(err.Error(), missing+" does not exist") {
		t.Errorf("missing device: %v", err)
	}
	if err := krun.CheckKVM(krun.HostKVM{Path: "/dev/null"}); err == nil || !strings.Contains(err.Error(), "/dev/null answers API version") {
		t.Errorf("a device that is not KVM: %v", err)
	}
	if (krun.HostKVM{}).Name() != "/dev/kvm" {
		t.Errorf("default device %q", krun.HostKVM{}.Name())
	}
}

// TestHelperKVMStates: the engine's probe and start through the real helper
// and the stand-in libkrun, with each KVM state injected into the helper:
// usable passes, every other state is ErrUnavailable (probe) or a start
// error naming the cause, before libkrun is configured.
func TestHelperKVMStates(t *testing.T) {
	helper, library := build(t)
	for _, state := range kvmtest.States {
		t.Run(state, func(t *testing.T) {
			logPath := filepath.Join(t.TempDir(), "calls")
			t.Setenv("KRUN_STANDIN_LOG", logPath)
			t.Setenv("KRUN_STANDIN_KVM", state)
			_, err := krun.New(context.Background(), krun.Options{Helper: helper, Library: library, Env: os.Environ()})
			want := kvmWant[state]
			if want == "" {
				if err != nil {
					t.Fatalf("probe with a usable KVM: %v", err)
				}
			} else if !errors.Is(err, krun.ErrUnavailable) || !strings.Contains(err.Error(), want) {
				t.Fatalf("probe: %v, want ErrUnavailable containing %q", err, want)
			}
			if want == "" {
				return // the contract tests start machines on a usable KVM
			}
			f := newFixture(t)
			_, err = krun.NewUnprobed(helper, library).Start(context.Background(), f.spec)
			if err == nil || !strings.Contains(err.Error(), "krun: "+want) {
				t.Errorf("start: %v, want %q", err, want)
			}
			if b, _ := os.ReadFile(logPath); strings.Contains(string(b), "krun_create_ctx") {
				t.Errorf("libkrun was configured despite an unusable KVM:\n%s", b)
			}
		})
	}
}
