package vmm

import (
	"bytes"
	"context"
	"os/exec"
	"sync"
	"time"
)

// Boot probes: some KVMs create VMs but cannot run a normal guest kernel
// (the nested KVM of the machines this project is developed on hangs right
// after real-mode setup; shared/reference/vm-boot-spike). Opening /dev/kvm
// cannot tell, so each engine boots the real kernel once and waits for the
// line the kernel prints when it hands over to the initrd.
const (
	// BootProbeTimeout bounds a probe boot: a usable KVM reaches the
	// guest's init in well under a second.
	BootProbeTimeout = 4 * time.Second
	// InitMarker is what the kernel prints, at loglevel 7 (so a probe's
	// command line must not say quiet), when it runs the initrd's /init.
	InitMarker = "Run /init as init process"
)

// ProbeBoot starts cmd, a VMM booting the guest kernel whose console goes
// to cmd's stdout or stderr, and reports whether the kernel reached /init
// within BootProbeTimeout. It kills the VMM as soon as it knows, and
// returns the tail of what it printed for the caller's error message. err
// is set when cmd could not start or ctx ended first.
func ProbeBoot(ctx context.Context, cmd *exec.Cmd) (booted bool, tail string, err error) {
	var out OutputBuffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := StartChild(cmd); err != nil {
		return false, "", err
	}
	exited := make(chan struct{})
	go func() { cmd.Wait(); close(exited) }()
	timer := time.NewTimer(BootProbeTimeout)
	defer timer.Stop()
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
loop:
	for {
		select {
		case <-tick.C:
			if booted = out.Contains(InitMarker); booted {
				break loop
			}
		case <-exited:
			booted = out.Contains(InitMarker)
			break loop
		case <-timer.C:
			break loop
		case <-ctx.Done():
			err = ctx.Err()
			break loop
		}
	}
	cmd.Process.Kill()
	<-exited
	return booted, out.Tail(300), err
}

// OutputBuffer collects a child's output (a probe's console, a test's
// guest console, a daemon's diagnostics) to search and quote while the
// child runs: safe for concurrent writes and reads, and bounded, since only
// a marker and a tail matter (it keeps the first MiB).
type OutputBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (o *OutputBuffer) Write(p []byte) (int, error) {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.b.Len() > 1<<20 {
		return len(p), nil
	}
	return o.b.Write(p)
}

// Contains reports whether the output so far holds s.
func (o *OutputBuffer) Contains(s string) bool {
	o.mu.Lock()
	defer o.mu.Unlock()
	return bytes.Contains(o.b.Bytes(), []byte(s))
}

// Tail is the last n bytes of the output so far.
func (o *OutputBuffer) Tail(n int) string {
	o.mu.Lock()
	defer o.mu.Unlock()
	b := o.b.Bytes()
	if len(b) > n {
		b = b[len(b)-n:]
	}
	return string(b)
}

// String is the output so far.
func (o *OutputBuffer) String() string {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.b.String()
}
