package reaper_test

import (
	"sync"
	"syscall"
	"testing"

	"github.com/torkbot/sandbox/sandbox-init/reaper"
)

// fakeWait is a WaitFunc fed by the test: each exit queues a status.
type fakeWait struct {
	mu     sync.Mutex
	exited []int
}

func (f *fakeWait) exit(pid int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.exited = append(f.exited, pid)
}

func (f *fakeWait) wait() (int, syscall.WaitStatus, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if len(f.exited) == 0 {
		return 0, 0, nil
	}
	pid := f.exited[0]
	f.exited = f.exited[1:]
	// The exit status is the pid's low byte, so statuses can be told apart.
	return pid, syscall.WaitStatus((pid & 0xff) << 8), nil
}

func started(pid int) func() (int, error) {
	return func() (int, error) { return pid, nil }
}

func received(t *testing.T, ch <-chan syscall.WaitStatus) (syscall.WaitStatus, bool) {
	t.Helper()
	select {
	case status := <-ch:
		return status, true
	default:
		return 0, false
	}
}

func TestReaper(t *testing.T) {
	tests := []struct {
		name string
		// run starts pid 10 in its own way and returns its exit channel.
		run        func(r *reaper.Reaper, w *fakeWait) <-chan syscall.WaitStatus
		wantStatus bool
	}{
		{
			name: "registered child exits",
			run: func(r *reaper.Reaper, w *fakeWait) <-chan syscall.WaitStatus {
				_, ch, _ := r.Start(started(10))
				w.exit(10)
				r.Reap()
				return ch
			},
			wantStatus: true,
		},
		{
			name: "child exits and is reaped before Start registers it",
			run: func(r *reaper.Reaper, w *fakeWait) <-chan syscall.WaitStatus {
				_, ch, _ := r.Start(func() (int, error) {
					w.exit(10)
					r.Reap() // SIGCHLD handled between fork and registration
					return 10, nil
				})
				return ch
			},
			wantStatus: true,
		},
		{
			name: "orphan's status is not kept for a later child with its pid",
			run: func(r *reaper.Reaper, w *fakeWait) <-chan syscall.WaitStatus {
				w.exit(10)
				r.Reap()
				_, ch, _ := r.Start(started(10))
				return ch
			},
			wantStatus: false,
		},
		{
			name: "orphan reaped during another Start is dropped when it ends",
			run: func(r *reaper.Reaper, w *fakeWait) <-chan syscall.WaitStatus {
				r.Start(func() (int, error) {
					w.exit(10)
					r.Reap()
					return 11, nil
				})
				_, ch, _ := r.Start(started(10))
				return ch
			},
			wantStatus: false,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			w := &fakeWait{}
			r := reaper.New(w.wait)
			ch := tt.run(r, w)
			status, ok := received(t, ch)
			if ok != tt.wantStatus {
				t.Fatalf("status received = %v, want %v", ok, tt.wantStatus)
			}
			if ok && status.ExitStatus() != 10 {
				t.Errorf("exit status = %d, want 10", status.ExitStatus())
			}
			// A child gets exactly one status: its own.
			w.exit(10)
			r.Reap()
			if _, later := received(t, ch); later == ok {
				t.Errorf("status of the child's own exit delivered = %v, want %v", later, !ok)
			}
		})
	}
}

func TestStartFailure(t *testing.T) {
	w := &fakeWait{}
	r := reaper.New(w.wait)
	_, ch, err := r.Start(func() (int, error) { return 0, syscall.ENOENT })
	if err != syscall.ENOENT || ch != nil {
		t.Errorf("Start = %v, %v; want ENOENT and no channel", ch, err)
	}
}

func TestReapStopsOnError(t *testing.T) {
	calls := 0
	r := reaper.New(func() (int, syscall.WaitStatus, error) {
		calls++
		return -1, 0, syscall.ECHILD
	})
	r.Reap()
	if calls != 1 {
		t.Errorf("wait called %d times after ECHILD", calls)
	}
}
