// Package reaper owns every wait for child processes in the guest's PID 1.
//
// PID 1 inherits every orphan of the system and must reap them, but a
// blanket wait4(-1) steals the exit status of children that someone else
// (os/exec's Wait) is waiting for. So one Reaper does all the waiting:
// processes are started through Reaper.Start (with syscall.ForkExec, never
// os/exec) and nothing else ever calls wait. A status is handed to the
// Start that registered its pid; statuses that arrive while a Start is
// between fork and registration are kept until it registers, so a child
// that exits at once is not lost; all other statuses are orphans' and are
// dropped.
package reaper

import (
	"context"
	"os"
	"os/signal"
	"sync"
	"syscall"
)

// WaitFunc collects one exited child without blocking, like
// wait4(-1, WNOHANG): it returns pid 0 when children exist but none has
// exited, and an error (ECHILD) when there are no children.
type WaitFunc func() (pid int, status syscall.WaitStatus, err error)

// Wait4 is the WaitFunc of a real process.
func Wait4() (int, syscall.WaitStatus, error) {
	var status syscall.WaitStatus
	for {
		pid, err := syscall.Wait4(-1, &status, syscall.WNOHANG, nil)
		if err == syscall.EINTR {
			continue
		}
		return pid, status, err
	}
}

// Reaper collects exited children and routes their statuses.
type Reaper struct {
	wait WaitFunc

	mu sync.Mutex
	// starting counts Start calls between fork and registration.
	starting int
	// waiters are the registered children that have not exited.
	waiters map[int]chan syscall.WaitStatus
	// unclaimed holds statuses reaped while starting > 0 for pids not
	// registered: possibly a child whose Start has not registered it yet.
	unclaimed map[int]syscall.WaitStatus
}

// New returns a Reaper that collects children with wait. Call Run, or Reap
// on every SIGCHLD.
func New(wait WaitFunc) *Reaper {
	return &Reaper{
		wait:      wait,
		waiters:   make(map[int]chan syscall.WaitStatus),
		unclaimed: make(map[int]syscall.WaitStatus),
	}
}

// Start calls start, which must start exactly one child process and return
// its pid, and registers that child: its wait status is sent on exited,
// once. If start fails, Start returns its error.
func (r *Reaper) Start(start func() (int, error)) (pid int, exited <-chan syscall.WaitStatus, err error) {
	r.mu.Lock()
	r.starting++
	r.mu.Unlock()

	pid, err = start()

	r.mu.Lock()
	defer r.mu.Unlock()
	r.starting--
	if err == nil {
		ch := make(chan syscall.WaitStatus, 1)
		if status, ok := r.unclaimed[pid]; ok {
			delete(r.unclaimed, pid)
			ch <- status
		} else {
			r.waiters[pid] = ch
		}
		exited = ch
	}
	if r.starting == 0 {
		// No Start can claim what is left: those were orphans.
		clear(r.unclaimed)
	}
	return pid, exited, err
}

// Reap collects every child that has exited, without blocking.
func (r *Reaper) Reap() {
	for {
		pid, status, err := r.wait()
		if err != nil || pid <= 0 {
			return
		}
		r.mu.Lock()
		if ch, ok := r.waiters[pid]; ok {
			delete(r.waiters, pid)
			ch <- status
		} else if r.starting > 0 {
			r.unclaimed[pid] = status
		}
		r.mu.Unlock()
	}
}

// Run reaps on every SIGCHLD until ctx is done.
func (r *Reaper) Run(ctx context.Context) {
	sigchld := make(chan os.Signal, 1)
	signal.Notify(sigchld, syscall.SIGCHLD)
	defer signal.Stop(sigchld)
	for {
		// Reaping before the first wait also collects children that exited
		// before Notify. Signals coalesce; one Reap collects them all.
		r.Reap()
		select {
		case <-ctx.Done():
			return
		case <-sigchld:
		}
	}
}
