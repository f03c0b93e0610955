package vmm

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"os/exec"
	"sync"
)

// ChildMachine is a Machine that is one VMM child process: its stdout is
// the guest console and its stderr the VMM's own diagnostics.
type ChildMachine struct {
	cmd      *exec.Cmd
	done     chan struct{}
	killOnce sync.Once
	status   string
}

// WatchChild follows cmd, started with StartChild, until it exits. It copies
// stdout to console, and stderr to console too, each line marked "[tag] ",
// so that errors about the guest show what the VMM said (a bad option, an
// unreadable disk). Once the process has exited and both pipes are read to
// the end it runs exited, if set, then closes Done.
func WatchChild(cmd *exec.Cmd, stdout, stderr io.ReadCloser, console io.Writer, tag string, exited func()) *ChildMachine {
	if console == nil {
		console = io.Discard
	}
	m := &ChildMachine{cmd: cmd, done: make(chan struct{})}
	go m.wait(stdout, stderr, console, tag, exited)
	return m
}

func (m *ChildMachine) wait(stdout, stderr io.ReadCloser, console io.Writer, tag string, exited func()) {
	defer stdout.Close()
	defer stderr.Close()
	var consoleMu sync.Mutex
	var wg sync.WaitGroup
	wg.Go(func() {
		buf := make([]byte, 32<<10)
		for {
			n, err := stdout.Read(buf)
			if n > 0 {
				consoleMu.Lock()
				console.Write(buf[:n])
				consoleMu.Unlock()
			}
			if err != nil {
				return
			}
		}
	})
	wg.Go(func() {
		sc := bufio.NewScanner(stderr)
		for sc.Scan() {
			consoleMu.Lock()
			fmt.Fprintf(console, "[%s] %s\n", tag, sc.Text())
			consoleMu.Unlock()
		}
	})
	wg.Wait()
	err := m.cmd.Wait()
	if exited != nil {
		exited()
	}
	var exit *exec.ExitError
	switch {
	case err == nil:
		m.status = "exit status 0"
	case errors.As(err, &exit):
		m.status = exit.ProcessState.String()
	default:
		m.status = err.Error()
	}
	close(m.done)
}

// Done implements Machine.
func (m *ChildMachine) Done() <-chan struct{} { return m.done }

// ExitStatus implements Machine.
func (m *ChildMachine) ExitStatus() string {
	<-m.done
	return m.status
}

// Pid implements Machine.
func (m *ChildMachine) Pid() int { return m.cmd.Process.Pid }

// Kill implements Machine.
func (m *ChildMachine) Kill() {
	m.killOnce.Do(func() { m.cmd.Process.Kill() })
}
