package vfs_test

import (
	"context"
	"strings"
	"testing"

	"github.com/torkbot/sandbox/vfs"
	"github.com/torkbot/sandbox/vfs/vfstest"
)

// readOnlyStats is a PosixFileSystem whose entries under "ro" report
// Writable false, as a JS filesystem's stat without `writable` does.
type readOnlyStats struct{ vfs.PosixFileSystem }

func (f readOnlyStats) Stat(ctx context.Context, p string) (vfs.Stat, error) {
	st, err := f.PosixFileSystem.Stat(ctx, p)
	st.Writable = st.Writable && !strings.HasPrefix(strings.TrimPrefix(p, "/"), "ro")
	return st, err
}

// TestModes: the modes the guest sees are 0644/0755 for writable entries
// and 0444/0555 for entries whose stat is not writable or on a read-only
// backend, which is what @torkbot/sandbox 0.6.0 showed.
func TestModes(t *testing.T) {
	files := map[string]string{"rw/f": "x", "ro/f": "x", "ro/d/g": "x"}
	for _, tc := range []struct {
		name string
		fsys vfs.FileSystem
		want string
	}{
		{"stat-driven", readOnlyStats{vfstest.NewMemFS(files)}, "rw 755\nrw/f 644\nro 555\nro/f 444\nro/d 555\n"},
		{"read-only backend", vfstest.ReadOnly{FS: vfstest.NewMemFS(files)}, "rw 555\nrw/f 444\nro 555\nro/f 444\nro/d 555\n"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			mnt, _ := mount(t, tc.fsys, false, vfs.Options{})
			if got := run(t, mnt, "stat", "-c", "%n %a", "rw", "rw/f", "ro", "ro/f", "ro/d"); got != tc.want {
				t.Errorf("modes:\n%s\nwant:\n%s", got, tc.want)
			}
		})
	}
}
