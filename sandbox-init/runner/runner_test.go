package runner_test

import (
	"context"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/torkbot/sandbox/control"
	"github.com/torkbot/sandbox/sandbox-init/reaper"
	"github.com/torkbot/sandbox/sandbox-init/runner"
)

// newRunner returns a Runner whose reaper collects this test process's
// children, as sandbox-init's does for PID 1.
func newRunner(t *testing.T) *runner.Runner {
	r := reaper.New(reaper.Wait4)
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	go r.Run(ctx)
	return runner.New(r)
}

// run starts cmd and collects its output and exit code.
func run(t *testing.T, rn *runner.Runner, cmd control.Command) (code int, stdout, stderr string) {
	t.Helper()
	p, err := rn.Start(cmd)
	if err != nil {
		t.Fatalf("Start: %v", err)
	}
	var wg sync.WaitGroup
	var out, errOut []byte
	wg.Go(func() { out, _ = io.ReadAll(p.Stdout()) })
	wg.Go(func() { errOut, _ = io.ReadAll(p.Stderr()) })
	wg.Wait()
	p.Stdout().Close()
	p.Stderr().Close()
	code, _ = p.Wait()
	return code, string(out), string(errOut)
}

// testEnv is a complete environment, as Server.Env merged with a request's.
var testEnv = map[string]string{"PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "HOME": "/root"}

func shell(script string) control.Command {
	return control.Command{Name: "/bin/sh", Args: []string{"-c", script}, Env: testEnv}
}

// writeScript writes an executable shell script into dir.
func writeScript(t *testing.T, dir, name string, mode os.FileMode) {
	t.Helper()
	if err := os.WriteFile(filepath.Join(dir, name), []byte("#!/bin/sh\necho script\n"), mode); err != nil {
		t.Fatal(err)
	}
}

func TestStart(t *testing.T) {
	rn := newRunner(t)
	dir := t.TempDir()
	writeScript(t, dir, "x.sh", 0o755)
	tests := []struct {
		name       string
		cmd        control.Command
		wantCode   int
		wantStdout string
		wantStderr string
	}{
		{name: "exit 0", cmd: shell("true")},
		{name: "exit status", cmd: shell("exit 42"), wantCode: 42},
		{name: "killed by a signal", cmd: shell("kill -TERM $$"), wantCode: 128 + 15},
		{name: "stdout and stderr", cmd: shell("echo out; echo err >&2"), wantStdout: "out\n", wantStderr: "err\n"},
		{name: "only the given environment", cmd: control.Command{Name: "/usr/bin/env", Env: map[string]string{"B": "2", "A": "1"}}, wantStdout: "A=1\nB=2\n"},
		{name: "working directory", cmd: control.Command{Name: "/bin/pwd", Dir: "/usr"}, wantStdout: "/usr\n"},
		{name: "stdin is /dev/null", cmd: shell("readlink /proc/$$/fd/0"), wantStdout: "/dev/null\n"},
		{name: "own session", cmd: shell(`set -- $(cut -d" " -f6 /proc/$$/stat); [ "$1" = $$ ] && echo leader`), wantStdout: "leader\n"},
		{name: "relative path from the working directory", cmd: control.Command{Name: "./x.sh", Dir: dir}, wantStdout: "script\n"},
		{name: "name found in the command's PATH", cmd: control.Command{Name: "x.sh", Env: map[string]string{"PATH": "/nonexistent:" + dir}}, wantStdout: "script\n"},
		{name: "relative PATH entry", cmd: control.Command{Name: "x.sh", Dir: dir, Env: map[string]string{"PATH": "."}}, wantStdout: "script\n"},
		{name: "argv[0] is the name", cmd: control.Command{Name: "sh", Args: []string{"-c", `echo "$0"`}, Env: testEnv}, wantStdout: "sh\n"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			code, stdout, stderr := run(t, rn, tt.cmd)
			if code != tt.wantCode || stdout != tt.wantStdout || stderr != tt.wantStderr {
				t.Errorf("got exit %d stdout %q stderr %q, want exit %d stdout %q stderr %q",
					code, stdout, stderr, tt.wantCode, tt.wantStdout, tt.wantStderr)
			}
		})
	}
}

func TestStartFailure(t *testing.T) {
	rn := newRunner(t)
	dir := t.TempDir()
	writeScript(t, dir, "noexec.sh", 0o644)
	tests := []struct {
		name    string
		cmd     control.Command
		wantErr string
	}{
		{"not in PATH", control.Command{Name: "no-such-command", Env: testEnv}, "executable file not found in $PATH"},
		{"no PATH", control.Command{Name: "sh"}, "executable file not found in $PATH"},
		{"missing path", control.Command{Name: "/no/such/file"}, "no such file or directory"},
		{"not executable", control.Command{Name: filepath.Join(dir, "noexec.sh")}, "permission denied"},
		{"directory", control.Command{Name: "/usr"}, "is a directory"},
		{"missing working directory", control.Command{Name: "/bin/true", Dir: "/no/such/dir"}, "working directory /no/such/dir: no such file or directory"},
		{"working directory is a file", control.Command{Name: "/bin/true", Dir: "/etc/passwd"}, "working directory /etc/passwd: not a directory"},
		{"bad interpreter", control.Command{Name: filepath.Join(dir, "bad.sh")}, "no such file or directory"},
	}
	if err := os.WriteFile(filepath.Join(dir, "bad.sh"), []byte("#!/no/such/interpreter\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p, err := rn.Start(tt.cmd)
			if err == nil {
				p.Kill()
				t.Fatal("Start succeeded")
			}
			if err.Error() != tt.wantErr {
				t.Errorf("error = %q, want %q", err, tt.wantErr)
			}
		})
	}
}

func TestKillKillsProcessGroup(t *testing.T) {
	rn := newRunner(t)
	p, err := rn.Start(shell("sleep 100 & echo $!; sleep 100"))
	if err != nil {
		t.Fatal(err)
	}
	line := make([]byte, 32)
	n, _ := p.Stdout().Read(line)
	background, err := strconv.Atoi(strings.TrimSpace(string(line[:n])))
	if err != nil {
		t.Fatalf("background pid %q: %v", line[:n], err)
	}
	p.Kill()
	if code, signal := p.Wait(); code != 128+9 || signal != 9 {
		t.Errorf("exit code = %d, signal %d, want 137 and 9", code, signal)
	}
	// The background sleep was in the group; once killed it is reaped by
	// whatever init this test runs under, so only check that it is dying.
	deadline := time.Now().Add(5 * time.Second)
	for {
		b, err := os.ReadFile("/proc/" + strconv.Itoa(background) + "/stat")
		if err != nil || strings.Contains(string(b), ") Z ") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("background process survived Kill")
		}
		time.Sleep(10 * time.Millisecond)
	}
	p.Kill() // after exit: harmless
}

func TestManyFastExits(t *testing.T) {
	// Children that exit before Start has registered them must not lose
	// their status to the reaper.
	rn := newRunner(t)
	var wg sync.WaitGroup
	for range 100 {
		wg.Go(func() {
			p, err := rn.Start(control.Command{Name: "/bin/true"})
			if err != nil {
				t.Error(err)
				return
			}
			p.Stdout().Close()
			p.Stderr().Close()
			done := make(chan int, 1)
			go func() {
				code, _ := p.Wait()
				done <- code
			}()
			select {
			case code := <-done:
				if code != 0 {
					t.Errorf("exit code %d", code)
				}
			case <-time.After(10 * time.Second):
				t.Error("exit status lost")
			}
		})
	}
	wg.Wait()
}

func TestConcurrentCommands(t *testing.T) {
	rn := newRunner(t)
	start := time.Now()
	var wg sync.WaitGroup
	for i := range 3 {
		wg.Go(func() {
			word := strconv.Itoa(i)
			if code, out, _ := run(t, rn, shell("sleep 1; echo "+word)); code != 0 || out != word+"\n" {
				t.Errorf("command %d: exit %d, output %q", i, code, out)
			}
		})
	}
	wg.Wait()
	if d := time.Since(start); d > 2500*time.Millisecond {
		t.Errorf("three concurrent 1 s commands took %v", d)
	}
}
