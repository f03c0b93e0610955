// Package controltest provides a control.Handler that runs commands as real
// processes on the machine running the tests, so that control.Client code
// can be tested end to end without a VM: connect a Client and a
// control.Server with net.Pipe or a socketpair and serve with a Handler.
package controltest

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"

	"github.com/torkbot/sandbox/control"
)

var _ control.Handler = (*Handler)(nil)

// Handler runs commands with os.StartProcess, each in its own session.
// The zero value is ready to use.
type Handler struct {
	mu sync.Mutex
	// pids are the process group ids of every command started.
	pids []int
	// shutdowns counts Shutdown calls.
	shutdowns int
}

// Start implements control.Handler.
func (h *Handler) Start(cmd control.Command) (control.Process, error) {
	dir := cmd.Dir
	if dir == "" {
		dir = "/"
	}
	if fi, err := os.Stat(dir); err != nil {
		return nil, fmt.Errorf("working directory: %w", err)
	} else if !fi.IsDir() {
		return nil, fmt.Errorf("working directory %s: not a directory", dir)
	}
	path, err := lookPath(cmd.Name, cmd.Env["PATH"])
	if err != nil {
		return nil, err
	}
	var env []string
	for k, v := range cmd.Env {
		env = append(env, k+"="+v)
	}
	slices.Sort(env)

	stdin, err := os.Open(os.DevNull)
	if err != nil {
		return nil, err
	}
	defer stdin.Close()
	stdoutR, stdoutW, err := os.Pipe()
	if err != nil {
		return nil, err
	}
	defer stdoutW.Close()
	stderrR, stderrW, err := os.Pipe()
	if err != nil {
		stdoutR.Close()
		return nil, err
	}
	defer stderrW.Close()

	p, err := os.StartProcess(path, append([]string{cmd.Name}, cmd.Args...), &os.ProcAttr{
		Dir:   dir,
		Env:   env,
		Files: []*os.File{stdin, stdoutW, stderrW},
		Sys:   &syscall.SysProcAttr{Setsid: true},
	})
	if err != nil {
		stdoutR.Close()
		stderrR.Close()
		var pe *os.PathError
		if errors.As(err, &pe) {
			err = pe.Err
		}
		return nil, err
	}
	h.mu.Lock()
	h.pids = append(h.pids, p.Pid)
	h.mu.Unlock()
	return &process{p: p, stdout: stdoutR, stderr: stderrR}, nil
}

// Shutdown implements control.Handler: it kills the process groups of all
// commands started.
func (h *Handler) Shutdown(context.Context) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.shutdowns++
	for _, pid := range h.pids {
		syscall.Kill(-pid, syscall.SIGKILL)
	}
	return nil
}

// Pids returns the pids, which are also the process group ids, of the
// commands started so far, in order.
func (h *Handler) Pids() []int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return slices.Clone(h.pids)
}

// Shutdowns returns how many times Shutdown was called.
func (h *Handler) Shutdowns() int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.shutdowns
}

var _ control.Process = (*process)(nil)

type process struct {
	p              *os.Process
	stdout, stderr *os.File
}

func (p *process) Pid() int         { return p.p.Pid }
func (p *process) Stdout() *os.File { return p.stdout }
func (p *process) Stderr() *os.File { return p.stderr }
func (p *process) Kill()            { syscall.Kill(-p.p.Pid, syscall.SIGKILL) }

func (p *process) Wait() (exitCode, signal int) {
	state, err := p.p.Wait()
	if err != nil {
		return 255, 0
	}
	ws := state.Sys().(syscall.WaitStatus)
	if ws.Signaled() {
		return 128 + int(ws.Signal()), int(ws.Signal())
	}
	return ws.ExitStatus(), 0
}

// lookPath finds name like a shell would, in the command's own PATH.
func lookPath(name, pathEnv string) (string, error) {
	if strings.Contains(name, "/") {
		return name, nil
	}
	for _, dir := range filepath.SplitList(pathEnv) {
		p := filepath.Join(dir, name)
		if fi, err := os.Stat(p); err == nil && fi.Mode().IsRegular() && fi.Mode()&0o111 != 0 {
			return p, nil
		}
	}
	return "", errors.New("executable file not found in $PATH")
}
