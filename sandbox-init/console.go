//go:build linux

package main

import (
	"fmt"
	"io"
	"os"
	"sync"
	"time"

	"golang.org/x/sys/unix"
)

// console writes init's log lines to the console, which the host captures.
// It is safe for concurrent use.
type console struct {
	mu sync.Mutex
	w  io.Writer
}

// logf writes one line stamped with the time since boot, the clock of the
// kernel's own lines around it.
func (c *console) logf(format string, args ...any) {
	line := fmt.Sprintf("[%8.3f] sandbox-init: "+format+"\n", append([]any{sinceBoot().Seconds()}, args...)...)
	c.Write([]byte(line))
}

// Write writes p as it is, for libraries that log lines of their own.
func (c *console) Write(p []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.w.Write(p)
}

// attach switches to /dev/console once devtmpfs is mounted, and makes it
// init's stdout and stderr too so that the Go runtime's own crash reports
// reach the host.
func (c *console) attach() error {
	f, err := os.OpenFile("/dev/console", os.O_WRONLY|unix.O_NOCTTY, 0)
	if err != nil {
		return err
	}
	for _, fd := range []int{1, 2} {
		if err := unix.Dup3(int(f.Fd()), fd, 0); err != nil {
			return fmt.Errorf("dup console to fd %d: %w", fd, err)
		}
	}
	c.mu.Lock()
	c.w = f
	c.mu.Unlock()
	return nil
}

// sinceBoot returns CLOCK_BOOTTIME: the time since the kernel started.
func sinceBoot() time.Duration {
	var ts unix.Timespec
	if err := unix.ClockGettime(unix.CLOCK_BOOTTIME, &ts); err != nil {
		return 0
	}
	return time.Duration(ts.Nano())
}
