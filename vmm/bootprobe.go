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
	var out lockedBuffer
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

// lockedBuffer collects a probe's output, which the VMM writes from two
// pipe readers; bounded, since only the marker and a tail matter.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.b.Len() > 1<<20 {
		return len(p), nil
	}
	return l.b.Write(p)
}

func (l *lockedBuffer) Contains(s string) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return bytes.Contains(l.b.Bytes(), []byte(s))
}

func (l *lockedBuffer) Tail(n int) string {
	l.mu.Lock()
	defer l.mu.Unlock()
	b := l.b.Bytes()
	if len(b) > n {
		b = b[len(b)-n:]
	}
	return string(b)
}
