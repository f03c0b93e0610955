package vmm

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
)

// Inside Node, this process's environment is the copy the Go runtime took
// when the addon was loaded: a variable set in process.env later is not in
// it. So engines never read it, never look commands up on its PATH and never
// let a child inherit it: the caller passes the environment of the boot()
// call (docs/settings.md), and these helpers use only that.

// Command is exec.Command with env as the child's whole environment (nil:
// an empty one), never this process's.
func Command(env []string, name string, args ...string) *exec.Cmd {
	cmd := exec.Command(name, args...)
	cmd.Env = childEnv(env)
	return cmd
}

// CommandContext is Command whose process is killed when ctx ends.
func CommandContext(ctx context.Context, env []string, name string, args ...string) *exec.Cmd {
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Env = childEnv(env)
	return cmd
}

func childEnv(env []string) []string {
	if env == nil {
		return []string{}
	}
	return env
}

// ErrNotFound is returned by LookPath when no directory holds name.
var ErrNotFound = errors.New("executable file not found")

// LookPath finds the executable name in the directories of path (a $PATH
// value), as exec.LookPath does with this process's own PATH. Relative
// directories are skipped, as exec.LookPath refuses them too.
func LookPath(name, path string) (string, error) {
	for _, dir := range filepath.SplitList(path) {
		if !filepath.IsAbs(dir) {
			continue
		}
		p := filepath.Join(dir, name)
		if st, err := os.Stat(p); err == nil && st.Mode().IsRegular() && st.Mode()&0o111 != 0 {
			return p, nil
		}
	}
	return "", fmt.Errorf("%s: %w in PATH %q", name, ErrNotFound, path)
}
