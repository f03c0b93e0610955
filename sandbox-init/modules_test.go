//go:build linux

package main

import (
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

func TestParseLoadOrder(t *testing.T) {
	tests := []struct {
		name    string
		content string
		want    []string
		wantErr string
	}{
		{name: "empty", content: ""},
		{
			name:    "modules, comments and blank lines",
			content: "# virtio first\nvirtio.ko\n\n  virtio_ring.ko  \nfs/ext4.ko.xz\ncrc.ko.zst\nx.ko.gz",
			want:    []string{"virtio.ko", "virtio_ring.ko", "fs/ext4.ko.xz", "crc.ko.zst", "x.ko.gz"},
		},
		{name: "absolute path", content: "/lib/modules/a.ko", wantErr: "line 1"},
		{name: "escapes the directory", content: "a.ko\n../a.ko", wantErr: "line 2"},
		{name: "unclean path", content: "a//b.ko", wantErr: "line 1"},
		{name: "not a module", content: "modules.dep", wantErr: "not a kernel module"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := parseLoadOrder(tt.content)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("error = %v, want one containing %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(got, tt.want) {
				t.Errorf("files = %q, want %q", got, tt.want)
			}
		})
	}
}

func TestLoadModulesWithoutLoadOrder(t *testing.T) {
	if n, err := loadModules(t.TempDir()); n != 0 || err != nil {
		t.Errorf("loadModules = %d, %v; want 0, nil", n, err)
	}
}

func TestLoadModulesReportsTheModule(t *testing.T) {
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "load.order"), []byte("missing.ko\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := loadModules(dir); err == nil || !strings.Contains(err.Error(), "load module missing.ko") {
		t.Errorf("error = %v, want one naming the module", err)
	}
}
