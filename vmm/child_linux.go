package vmm

import (
	"fmt"
	"os/exec"
	"runtime"
	"sync"
	"syscall"

	"golang.org/x/sys/unix"
)

// StartChild starts cmd so that it is killed when this process dies.
//
// Linux delivers PR_SET_PDEATHSIG when the *thread* that forked the child
// exits, not the process, and the Go runtime may retire threads. So every
// VMM child is forked from one goroutine locked to an OS thread that never
// exits.
func StartChild(cmd *exec.Cmd) error {
	spawnerOnce.Do(func() { go spawner() })
	if cmd.SysProcAttr == nil {
		cmd.SysProcAttr = &syscall.SysProcAttr{}
	}
	cmd.SysProcAttr.Pdeathsig = syscall.SIGKILL
	// Its own process group: a Ctrl-C meant for the Node program is not
	// delivered to the VMM, which dies with its parent instead.
	cmd.SysProcAttr.Setpgid = true
	done := make(chan error, 1)
	spawns <- spawnRequest{cmd, done}
	return <-done
}

type spawnRequest struct {
	cmd  *exec.Cmd
	done chan<- error
}

var (
	spawnerOnce sync.Once
	spawns      = make(chan spawnRequest)
)

// spawner forks every child. A Go runtime inside Node starts its threads
// with all asynchronous signals blocked (bridge/napi), and a forked child
// keeps the forking thread's mask across exec: a VMM would start deaf to
// SIGTERM and friends. So this thread unblocks everything just around the
// fork (Go blocks signals again during the fork itself) and blocks them
// again right after.
func spawner() {
	runtime.LockOSThread() // never unlocked: this thread must outlive every child
	var none unix.Sigset_t
	for r := range spawns {
		var saved unix.Sigset_t
		if err := unix.PthreadSigmask(unix.SIG_SETMASK, &none, &saved); err != nil {
			r.done <- fmt.Errorf("reset signal mask for child: %w", err)
			continue
		}
		err := r.cmd.Start()
		unix.PthreadSigmask(unix.SIG_SETMASK, &saved, nil)
		r.done <- err
	}
}
