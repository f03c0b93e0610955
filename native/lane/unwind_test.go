package lane_test

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/torkbot/sandbox/bootparams"
	"github.com/torkbot/sandbox/native/lane"
	"github.com/torkbot/sandbox/netpolicy"
	"github.com/torkbot/sandbox/vfs/vfstest"
	"github.com/torkbot/sandbox/vmm"
	"github.com/torkbot/sandbox/vmm/vmmtest"
)

// fakeEngine stands in for a VMM (there is none to run in a unit test): it
// takes the spec's files as an engine does, and plays one way a start can
// end.
type fakeEngine struct {
	// start returns the machine, or an error, for the files it was given.
	start func(spec vmm.Spec) (vmm.Machine, error)
	spec  vmm.Spec
}

func (e *fakeEngine) Name() string { return "fake" }

func (e *fakeEngine) Start(_ context.Context, spec vmm.Spec) (vmm.Machine, error) {
	e.spec = spec
	return e.start(spec)
}

// specFiles are the guest ends an engine takes.
func specFiles(spec vmm.Spec) []*os.File {
	files := []*os.File{spec.NIC, spec.RootDisk.NBD}
	for _, ch := range spec.Channels {
		files = append(files, ch.Conn)
	}
	return files
}

func closeSpec(spec vmm.Spec) {
	for _, f := range specFiles(spec) {
		if f != nil {
			f.Close()
		}
	}
}

// fakeMachine exits when exit is called, closing what the VMM held.
type fakeMachine struct {
	done     chan struct{}
	once     sync.Once
	spec     vmm.Spec
	killed   bool
	statusMu sync.Mutex
}

func newFakeMachine(spec vmm.Spec) *fakeMachine {
	return &fakeMachine{done: make(chan struct{}), spec: spec}
}

func (m *fakeMachine) exit() {
	m.once.Do(func() {
		closeSpec(m.spec)
		close(m.done)
	})
}

func (m *fakeMachine) Done() <-chan struct{} { return m.done }
func (m *fakeMachine) ExitStatus() string    { return "exit status 3" }
func (m *fakeMachine) Pid() int              { return 0 }
func (m *fakeMachine) Kill() {
	m.statusMu.Lock()
	m.killed = true
	m.statusMu.Unlock()
	m.exit()
}

// openFDs counts this process's open file descriptors.
func openFDs(t *testing.T) int {
	t.Helper()
	entries, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Skipf("no /proc/self/fd: %v", err)
	}
	return len(entries)
}

// settled waits for the goroutine count to fall back to at most want.
func settled(want int) int {
	deadline := time.Now().Add(5 * time.Second)
	for {
		n := runtime.NumGoroutine()
		if n <= want || time.Now().After(deadline) {
			return n
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestBootUnwinds boots with every device (a network policy, a mount, an
// ephemeral COW root) against engines that fail each way a start can, and
// checks that Boot says why and leaves no fd or goroutine behind.
func TestBootUnwinds(t *testing.T) {
	dir := vmmtest.Artifacts(t)
	image := filepath.Join(dir, "images/debian-13-slim.qcow2")
	for _, tc := range []struct {
		name    string
		start   func(spec vmm.Spec) (vmm.Machine, error)
		wantErr string
	}{
		{
			name: "start fails",
			start: func(spec vmm.Spec) (vmm.Machine, error) {
				closeSpec(spec) // the engine owns them even when it fails
				return nil, errors.New("fake: no VMM today")
			},
			wantErr: "fake: no VMM today",
		},
		{
			name: "VMM exits before the handshake",
			start: func(spec vmm.Spec) (vmm.Machine, error) {
				m := newFakeMachine(spec)
				time.AfterFunc(50*time.Millisecond, m.exit)
				return m, nil
			},
			wantErr: "sandbox-host exited: the sandbox VM exited unexpectedly (fake: exit status 3)",
		},
		{
			name: "guest drops the control channel, VMM runs on",
			start: func(spec vmm.Spec) (vmm.Machine, error) {
				m := newFakeMachine(spec)
				for _, ch := range spec.Channels {
					if ch.Name == "control" {
						ch.Conn.Close()
					}
				}
				return m, nil
			},
			// Not an exit: the VMM is still there, so the lost session
			// is what Boot reports, after waiting a bounded time for an exit.
			wantErr: "session with the guest lost",
		},
		{
			name: "guest never answers",
			start: func(spec vmm.Spec) (vmm.Machine, error) {
				return newFakeMachine(spec), nil
			},
			wantErr: "did not become ready within 300ms",
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			fds, goroutines := openFDs(t), runtime.NumGoroutine()
			engine := &fakeEngine{start: tc.start}
			began := time.Now()
			_, err := lane.Boot(context.Background(), lane.Config{
				Engine: engine, Kernel: "/k/vmlinux", Initrd: "/k/initrd.cpio",
				RootDisk:      vmm.Disk{Path: image, Format: "qcow2", ReadOnly: true},
				EphemeralRoot: true,
				Network: netpolicy.PolicyFunc(func(context.Context, netpolicy.Flow) (netpolicy.Decision, error) {
					return netpolicy.Decision{}, nil
				}),
				Mounts:      []lane.Mount{{Target: "/workspace", FS: vfstest.NewMemFS(nil)}},
				CPUs:        1,
				MemoryMiB:   256,
				BootTimeout: 300 * time.Millisecond,
			})
			took := time.Since(began)
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Fatalf("Boot error = %v, want one containing %q", err, tc.wantErr)
			}
			// Each way ends within the boot timeout or exitGrace (1 s); the
			// bound leaves room for a loaded machine under -race.
			if took > 15*time.Second {
				t.Errorf("Boot took %v to fail", took)
			}
			if n := settled(goroutines); n > goroutines {
				t.Errorf("%d goroutines after a failed boot, %d before", n, goroutines)
			}
			if n := openFDs(t); n != fds {
				t.Errorf("%d open fds after a failed boot, %d before", n, fds)
			}
			if m := engine.spec.Boot; m.Net == nil || len(m.Mounts) != 1 || !m.RootWritable {
				t.Errorf("engine got boot parameters %+v, want a NIC, one mount and a writable root", m)
			}
		})
	}
}

// TestBootParams checks what the lane tells init: every field the boot
// needs, encoded by the one codec (bootparams) that init parses.
func TestBootParams(t *testing.T) {
	dir := vmmtest.Artifacts(t)
	engine := &fakeEngine{start: func(spec vmm.Spec) (vmm.Machine, error) {
		closeSpec(spec)
		return nil, errors.New("fake: stop here")
	}}
	lane.Boot(context.Background(), lane.Config{
		Engine:      engine,
		RootDisk:    vmm.Disk{Path: filepath.Join(dir, "images/debian-13-slim.qcow2"), Format: "qcow2", ReadOnly: true},
		Mounts:      []lane.Mount{{Target: "/my work,dir", FS: vfstest.NewMemFS(nil)}},
		CPUs:        1,
		MemoryMiB:   256,
		BootTimeout: time.Second,
	})
	encoded, err := engine.spec.Boot.Encode()
	if err != nil {
		t.Fatal(err)
	}
	got, _, err := bootparams.Parse("console=ttyS0 " + encoded)
	if err != nil {
		t.Fatal(err)
	}
	if got.RootWritable || got.Net != nil || len(got.Mounts) != 1 || got.Mounts[0] != (bootparams.Mount{Channel: "fs.0", Target: "/my work,dir"}) {
		t.Errorf("init reads %+v from %q", got, encoded)
	}
	if names := []string{engine.spec.Channels[0].Name, engine.spec.Channels[1].Name}; names[0] != "fs.0" || names[1] != "control" {
		t.Errorf("channels %v", names)
	}
}
