// Package runner starts the commands of control-protocol exec requests as
// processes of the guest: each in a new session and process group, stdin on
// /dev/null, stdout and stderr on pipes, started with syscall.ForkExec
// through the PID 1 reaper, which does all the waiting.
package runner

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"

	"github.com/torkbot/sandbox/control"
	"github.com/torkbot/sandbox/sandbox-init/reaper"
)

// Runner starts processes. It is safe for concurrent use.
type Runner struct {
	reaper *reaper.Reaper
}

// New returns a Runner whose children are waited for by r.
func New(r *reaper.Reaper) *Runner {
	return &Runner{reaper: r}
}

// errNotFound is reported, as a shell would, for a name absent from PATH.
var errNotFound = errors.New("executable file not found in $PATH")

// Start starts cmd as described by control.Handler. Errors say in a few
// words why the command cannot start.
func (r *Runner) Start(cmd control.Command) (control.Process, error) {
	dir := cmd.Dir
	if dir == "" {
		dir = "/"
	}
	// ForkExec reports a failed chdir and a failed exec with the same bare
	// errno, so the working directory is checked first to tell them apart.
	if fi, err := os.Stat(dir); err != nil {
		return nil, fmt.Errorf("working directory %s: %w", dir, unwrapPath(err))
	} else if !fi.IsDir() {
		return nil, fmt.Errorf("working directory %s: %w", dir, syscall.ENOTDIR)
	}
	path, err := lookPath(cmd.Name, cmd.Env["PATH"], dir)
	if err != nil {
		return nil, err
	}

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

	argv := append([]string{cmd.Name}, cmd.Args...)
	// Fd also puts the pipes' write ends back in blocking mode, which is
	// what the child expects of its stdout and stderr.
	attr := &syscall.ProcAttr{
		Dir:   dir,
		Env:   environ(cmd.Env),
		Files: []uintptr{stdin.Fd(), stdoutW.Fd(), stderrW.Fd()},
		Sys:   &syscall.SysProcAttr{Setsid: true},
	}
	pid, exited, err := r.reaper.Start(func() (int, error) {
		return syscall.ForkExec(path, argv, attr)
	})
	if err != nil {
		stdoutR.Close()
		stderrR.Close()
		return nil, err
	}
	return &process{pid: pid, exited: exited, stdout: stdoutR, stderr: stderrR}, nil
}

func environ(env map[string]string) []string {
	list := make([]string, 0, len(env))
	for k, v := range env {
		list = append(list, k+"="+v)
	}
	slices.Sort(list)
	return list
}

// lookPath finds name as a shell would: a name with a slash is a path, any
// other is searched in pathEnv. Relative paths are relative to dir, the
// directory the child will exec from.
func lookPath(name, pathEnv, dir string) (string, error) {
	if strings.Contains(name, "/") {
		if err := checkExecutable(name, dir); err != nil {
			return "", err
		}
		return name, nil
	}
	for _, d := range filepath.SplitList(pathEnv) {
		if d == "" {
			d = "."
		}
		p := filepath.Join(d, name)
		if checkExecutable(p, dir) == nil {
			return p, nil
		}
	}
	return "", errNotFound
}

func checkExecutable(path, dir string) error {
	if !filepath.IsAbs(path) {
		path = filepath.Join(dir, path)
	}
	fi, err := os.Stat(path)
	switch {
	case err != nil:
		return unwrapPath(err)
	case fi.IsDir():
		return syscall.EISDIR
	case !fi.Mode().IsRegular() || fi.Mode()&0o111 == 0:
		return syscall.EACCES
	}
	return nil
}

// unwrapPath drops the path from a *fs.PathError: callers name it
// themselves.
func unwrapPath(err error) error {
	var pe *fs.PathError
	if errors.As(err, &pe) {
		return pe.Err
	}
	return err
}

var _ control.Process = (*process)(nil)

// process implements control.Process.
type process struct {
	pid            int
	exited         <-chan syscall.WaitStatus
	stdout, stderr *os.File
}

func (p *process) Pid() int         { return p.pid }
func (p *process) Stdout() *os.File { return p.stdout }
func (p *process) Stderr() *os.File { return p.stderr }

// Kill kills the process group, whose id is the pid (setsid).
func (p *process) Kill() { syscall.Kill(-p.pid, syscall.SIGKILL) }

func (p *process) Wait() (exitCode, signal int) {
	return exitStatus(<-p.exited)
}

// exitStatus is the exit code a shell reports: the exit status, or 128+N
// and N when signal N killed the process.
func exitStatus(status syscall.WaitStatus) (exitCode, signal int) {
	if status.Signaled() {
		return 128 + int(status.Signal()), int(status.Signal())
	}
	return status.ExitStatus(), 0
}
