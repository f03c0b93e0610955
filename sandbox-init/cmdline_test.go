//go:build linux

package main

import (
	"reflect"
	"strings"
	"testing"
)

func TestParseCmdline(t *testing.T) {
	defaults := defaultBootConfig()
	tests := []struct {
		name         string
		cmdline      string
		want         bootConfig
		wantWarnings int
		wantErr      string
	}{
		{name: "defaults", cmdline: "console=ttyS0 quiet\n", want: defaults},
		{
			name:    "all set",
			cmdline: "console=ttyS0 sandbox.root=/dev/vdb sandbox.rootfstype=xfs sandbox.rootmode=rw sandbox.hostname=lane-1 panic=-1",
			want:    bootConfig{root: "/dev/vdb", rootFSType: "xfs", rootReadOnly: false, hostname: "lane-1"},
		},
		{name: "last one wins", cmdline: "sandbox.rootmode=rw sandbox.rootmode=ro", want: defaults},
		{name: "quoted", cmdline: `sandbox.hostname="box" "sandbox.root=/dev/vdc"`, want: bootConfig{root: "/dev/vdc", rootFSType: "ext4", rootReadOnly: true, hostname: "box"}},
		{name: "init arguments are not parameters", cmdline: "quiet -- sandbox.rootmode=bogus", want: defaults},
		{name: "unknown sandbox parameter", cmdline: "sandbox.rot=/dev/vdb sandbox.x", want: defaults, wantWarnings: 2},
		{name: "bad mode", cmdline: "sandbox.rootmode=rx", wantErr: "sandbox.rootmode"},
		{name: "relative root", cmdline: "sandbox.root=vda", wantErr: "sandbox.root"},
		{name: "unclean root", cmdline: "sandbox.root=/dev/../vda", wantErr: "sandbox.root"},
		{name: "bad fstype", cmdline: "sandbox.rootfstype=ext4,x", wantErr: "sandbox.rootfstype"},
		{name: "empty hostname", cmdline: "sandbox.hostname=", wantErr: "sandbox.hostname"},
		{name: "hostname with a space", cmdline: `sandbox.hostname="a b"`, wantErr: "sandbox.hostname"},
		{name: "long hostname", cmdline: "sandbox.hostname=" + strings.Repeat("h", 65), wantErr: "sandbox.hostname"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, warnings, err := parseCmdline(tt.cmdline)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("error = %v, want one naming %s", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got != tt.want {
				t.Errorf("config = %+v, want %+v", got, tt.want)
			}
			if len(warnings) != tt.wantWarnings {
				t.Errorf("warnings = %q, want %d", warnings, tt.wantWarnings)
			}
		})
	}
}

func TestSplitCmdline(t *testing.T) {
	got := splitCmdline(`  a=1  b="x y" "c=z w"  d -- e`)
	want := []string{"a=1", "b=x y", "c=z w", "d"}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("split = %q, want %q", got, want)
	}
}

func TestParseCmdlineNetwork(t *testing.T) {
	cfg, _, err := parseCmdline("quiet sandbox.ip=10.0.2.2/24 sandbox.gateway=10.0.2.1 sandbox.ip6=fd00::2/64 sandbox.gateway6=fd00::1 sandbox.dns=10.0.2.1,fd00::1 sandbox.mtu=65520")
	if err != nil {
		t.Fatal(err)
	}
	n := cfg.net
	if n == nil || n.ip4.String() != "10.0.2.2/24" || n.gateway4.String() != "10.0.2.1" || n.ip6.String() != "fd00::2/64" ||
		n.gateway6.String() != "fd00::1" || len(n.dns) != 2 || n.mtu != 65520 {
		t.Errorf("parsed %+v", n)
	}
	if cfg, _, _ := parseCmdline("sandbox.root=/dev/vda"); cfg.net != nil {
		t.Error("no network parameters, yet a network config")
	}
	for _, bad := range []string{
		"sandbox.ip=10.0.2.2 sandbox.gateway=10.0.2.1 sandbox.mtu=1500",     // no prefix length
		"sandbox.ip=fd00::2/64 sandbox.gateway=10.0.2.1 sandbox.mtu=1500",   // not IPv4
		"sandbox.ip=10.0.2.2/24 sandbox.gateway=10.0.2.1 sandbox.mtu=70000", // MTU range
		"sandbox.ip=10.0.2.2/24 sandbox.mtu=1500",                           // no gateway
		"sandbox.ip=10.0.2.2/24 sandbox.gateway=10.0.2.1 sandbox.dns=x sandbox.mtu=1500",
	} {
		if _, _, err := parseCmdline(bad); err == nil {
			t.Errorf("%q: no error", bad)
		}
	}
}

func TestParseMounts(t *testing.T) {
	for _, tc := range []struct {
		value   string
		want    []hostMount
		wantErr bool
	}{
		{value: "", want: nil},
		{value: "fs.0:rw:/mnt/data", want: []hostMount{{"fs.0", false, "/mnt/data"}}},
		{value: "fs.0:ro:/srv/my%20files,fs.1:rw:/a%2Cb:c", want: []hostMount{{"fs.0", true, "/srv/my files"}, {"fs.1", false, "/a,b:c"}}},
		{value: "fs.0:rx:/mnt", wantErr: true},
		{value: "fs.0:rw:relative", wantErr: true},
		{value: "fs.0:rw:/", wantErr: true},
		{value: "fs.0:rw:/a/../b", wantErr: true},
		{value: "fs.0:rw:/a%00b", wantErr: true},
		{value: "fs.0:rw:/a%zz", wantErr: true},
		{value: "fs.0:rw", wantErr: true},
		{value: "f s:rw:/a", wantErr: true},
		{value: "fs.0:rw:/a,fs.0:rw:/b", wantErr: true},
		{value: "fs.0:rw:/a,fs.1:ro:/a", wantErr: true},
	} {
		got, err := parseMounts(tc.value)
		if (err != nil) != tc.wantErr || !reflect.DeepEqual(got, tc.want) {
			t.Errorf("parseMounts(%q) = %+v, %v; want %+v, error %v", tc.value, got, err, tc.want, tc.wantErr)
		}
	}
	cfg, _, err := parseCmdline(`console=ttyS0 sandbox.mounts=fs.0:ro:/mnt/x`)
	if m := cfg.hostMounts(); err != nil || len(m) != 1 || m[0].target != "/mnt/x" || !m[0].readOnly {
		t.Errorf("parseCmdline: %+v, %v", m, err)
	}
}
