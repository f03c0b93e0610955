//go:build linux

package main

import (
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/torkbot/sandbox/bootparams"
)

func TestParseLoadOrder(t *testing.T) {
	tests := []struct {
		name    string
		content string
		want    []moduleEntry
		wantErr string
	}{
		{name: "empty", content: ""},
		{
			name:    "modules, comments and blank lines",
			content: "# virtio first\nvirtio.ko\n\n  virtio_ring.ko  \nfs/ext4.ko.xz\ncrc.ko.zst\nx.ko.gz",
			want:    []moduleEntry{{file: "virtio.ko"}, {file: "virtio_ring.ko"}, {file: "fs/ext4.ko.xz"}, {file: "crc.ko.zst"}, {file: "x.ko.gz"}},
		},
		{
			name:    "groups",
			content: "ext4.ko\nvsock.ko vsock vsock-loopback\nnbd.ko  nbd",
			want:    []moduleEntry{{file: "ext4.ko"}, {file: "vsock.ko", groups: []string{"vsock", "vsock-loopback"}}, {file: "nbd.ko", groups: []string{"nbd"}}},
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
	if n, err := loadModules(t.TempDir(), nil); n != 0 || err != nil {
		t.Errorf("loadModules = %d, %v; want 0, nil", n, err)
	}
}

func TestLoadModulesReportsTheModule(t *testing.T) {
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "load.order"), []byte("missing.ko\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := loadModules(dir, nil); err == nil || !strings.Contains(err.Error(), "load module missing.ko") {
		t.Errorf("error = %v, want one naming the module", err)
	}
}

func TestLoadModulesSkipsUnusedGroups(t *testing.T) {
	dir := t.TempDir()
	// Only modules of unused groups: nothing is opened, so nothing fails.
	if err := os.WriteFile(filepath.Join(dir, "load.order"), []byte("nbd.ko nbd\nvsock.ko vsock vsock-loopback\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if n, err := loadModules(dir, map[string]bool{"network": true}); n != 0 || err != nil {
		t.Errorf("loadModules = %d, %v; want 0, nil", n, err)
	}
	// A module of several groups is loaded for any of them.
	if _, err := loadModules(dir, map[string]bool{"vsock-loopback": true}); err == nil || !strings.Contains(err.Error(), "load module vsock.ko") {
		t.Errorf("error = %v, want vsock.ko loaded for vsock-loopback", err)
	}
}

func TestModuleGroups(t *testing.T) {
	p := bootparams.Params{Net: &bootparams.Net{MTU: 1500}, Modules: []string{"virtiofs", "vsock-loopback"}}
	got := moduleGroups(p)
	for group, want := range map[string]bool{"network": true, "virtiofs": true, "vsock-loopback": true, "mounts": false, "vsock": false, "nbd": false} {
		if got[group] != want {
			t.Errorf("group %s used = %v, want %v", group, got[group], want)
		}
	}
	for group, used := range moduleGroups(bootparams.Params{}) {
		if used {
			t.Errorf("a plain boot uses group %s", group)
		}
	}
}
