package bootparams

import (
	"net/netip"
	"reflect"
	"strings"
	"testing"
)

func TestParse(t *testing.T) {
	tests := []struct {
		name         string
		cmdline      string
		want         Params
		wantWarnings int
		wantErr      string
	}{
		{name: "defaults", cmdline: "console=ttyS0 sandbox.v=1 quiet\n"},
		{
			name:    "root",
			cmdline: "console=ttyS0 sandbox.v=1 sandbox.root=/dev/vdb sandbox.rootfstype=xfs sandbox.rootmode=rw sandbox.hostname=lane-1 panic=-1",
			want:    Params{RootDevice: "/dev/vdb", RootFSType: "xfs", RootWritable: true, Hostname: "lane-1"},
		},
		{name: "quoted", cmdline: `sandbox.v=1 sandbox.hostname="box" "sandbox.root=/dev/vdc"`, want: Params{RootDevice: "/dev/vdc", Hostname: "box"}},
		{name: "init arguments are not parameters", cmdline: "sandbox.v=1 quiet -- sandbox.rootmode=bogus"},
		{name: "unknown sandbox parameter", cmdline: "sandbox.v=1 sandbox.rot=/dev/vdb sandbox.x", wantWarnings: 2},
		{
			name:    "nbd root over vsock",
			cmdline: "sandbox.v=1 sandbox.root=nbd:disk sandbox.channels=vsock:control=1024,disk=1025",
			want:    Params{RootNBD: "disk", VsockPorts: map[string]uint32{"control": 1024, "disk": 1025}},
		},
		{
			name:    "mounts",
			cmdline: "sandbox.v=1 sandbox.mounts=fs.0:ro:/srv/my%20files,fs.1:rw:/a%2Cb:c",
			want:    Params{Mounts: []Mount{{"fs.0", true, "/srv/my files"}, {"fs.1", false, "/a,b:c"}}},
		},
		{
			name:    "network",
			cmdline: "sandbox.v=1 sandbox.ip=10.0.2.2/24 sandbox.gateway=10.0.2.1 sandbox.ip6=fd00::2/64 sandbox.gateway6=fd00::1 sandbox.dns=10.0.2.1,fd00::1 sandbox.mtu=65520",
			want: Params{Net: &Net{
				IP4: netip.MustParsePrefix("10.0.2.2/24"), Gateway4: netip.MustParseAddr("10.0.2.1"),
				IP6: netip.MustParsePrefix("fd00::2/64"), Gateway6: netip.MustParseAddr("fd00::1"),
				DNS: []netip.Addr{netip.MustParseAddr("10.0.2.1"), netip.MustParseAddr("fd00::1")}, MTU: 65520,
			}},
		},

		{name: "no version", cmdline: "console=ttyS0 sandbox.rootmode=rw", wantErr: "no sandbox.v"},
		{name: "other version", cmdline: "sandbox.v=2", wantErr: "different releases"},
		{name: "given twice", cmdline: "sandbox.v=1 sandbox.rootmode=rw sandbox.rootmode=ro", wantErr: "sandbox.rootmode given twice"},
		{name: "root given twice", cmdline: "sandbox.v=1 sandbox.root=/dev/vda sandbox.root=nbd:disk", wantErr: "sandbox.root given twice"},
		{name: "bad mode", cmdline: "sandbox.v=1 sandbox.rootmode=rx", wantErr: "sandbox.rootmode"},
		{name: "relative root", cmdline: "sandbox.v=1 sandbox.root=vda", wantErr: "sandbox.root"},
		{name: "unclean root", cmdline: "sandbox.v=1 sandbox.root=/dev/../vda", wantErr: "sandbox.root"},
		{name: "empty nbd channel", cmdline: "sandbox.v=1 sandbox.root=nbd:", wantErr: "sandbox.root"},
		{name: "nbd channel with a slash", cmdline: "sandbox.v=1 sandbox.root=nbd:a/b", wantErr: "sandbox.root"},
		{name: "bad fstype", cmdline: "sandbox.v=1 sandbox.rootfstype=ext4,x", wantErr: "sandbox.rootfstype"},
		{name: "empty hostname", cmdline: "sandbox.v=1 sandbox.hostname=", wantErr: "sandbox.hostname"},
		{name: "hostname with a space", cmdline: `sandbox.v=1 sandbox.hostname="a b"`, wantErr: "sandbox.hostname"},
		{name: "long hostname", cmdline: "sandbox.v=1 sandbox.hostname=" + strings.Repeat("h", 65), wantErr: "sandbox.hostname"},
		{name: "serial channels", cmdline: "sandbox.v=1 sandbox.channels=serial:x=1", wantErr: "sandbox.channels"},
		{name: "vsock port 0", cmdline: "sandbox.v=1 sandbox.channels=vsock:x=0", wantErr: "sandbox.channels"},
		{name: "vsock port any", cmdline: "sandbox.v=1 sandbox.channels=vsock:x=4294967295", wantErr: "sandbox.channels"},
		{name: "vsock port twice", cmdline: "sandbox.v=1 sandbox.channels=vsock:x=5,y=5", wantErr: "sandbox.channels"},
		{name: "no prefix length", cmdline: "sandbox.v=1 sandbox.ip=10.0.2.2 sandbox.gateway=10.0.2.1 sandbox.mtu=1500", wantErr: "sandbox.ip"},
		{name: "IPv6 as ip", cmdline: "sandbox.v=1 sandbox.ip=fd00::2/64 sandbox.gateway=10.0.2.1 sandbox.mtu=1500", wantErr: "sandbox.ip"},
		{name: "MTU range", cmdline: "sandbox.v=1 sandbox.ip=10.0.2.2/24 sandbox.gateway=10.0.2.1 sandbox.mtu=70000", wantErr: "sandbox.mtu"},
		{name: "no gateway", cmdline: "sandbox.v=1 sandbox.ip=10.0.2.2/24 sandbox.mtu=1500", wantErr: "need at least"},
		{name: "bad resolver", cmdline: "sandbox.v=1 sandbox.ip=10.0.2.2/24 sandbox.gateway=10.0.2.1 sandbox.dns=x sandbox.mtu=1500", wantErr: "sandbox.dns"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, warnings, err := Parse(tt.cmdline)
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
				t.Errorf("params = %+v, want %+v", got, tt.want)
			}
			if len(warnings) != tt.wantWarnings {
				t.Errorf("warnings = %q, want %d", warnings, tt.wantWarnings)
			}
		})
	}
}

func TestMountTargetsRejected(t *testing.T) {
	for _, value := range []string{
		"fs.0:rx:/mnt", "fs.0:rw:relative", "fs.0:rw:/", "fs.0:rw:/a/../b", "fs.0:rw:/a%00b",
		"fs.0:rw:/a%zz", "fs.0:rw", "f s:rw:/a", "fs.0:rw:/a,fs.0:rw:/b", "fs.0:rw:/a,fs.1:ro:/a",
	} {
		if _, _, err := Parse("sandbox.v=1 sandbox.mounts=" + value); err == nil {
			t.Errorf("sandbox.mounts=%s accepted", value)
		}
	}
}

func TestSplitCmdline(t *testing.T) {
	got := splitCmdline(`  a=1  b="x y" "c=z w"  d -- e`)
	want := []string{"a=1", "b=x y", "c=z w", "d"}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("split = %q, want %q", got, want)
	}
}

func TestEncodeRoundTrip(t *testing.T) {
	p := Params{
		RootNBD: "disk", RootWritable: true, Hostname: "lane-7",
		VsockPorts: map[string]uint32{"control": 1026, "fs.0": 1024, "disk": 1025},
		Mounts:     []Mount{{"fs.0", false, "/work space/100%,x"}},
		Net: &Net{
			IP4: netip.MustParsePrefix("10.0.2.15/24"), Gateway4: netip.MustParseAddr("10.0.2.2"),
			IP6: netip.MustParsePrefix("fd00::15/64"), Gateway6: netip.MustParseAddr("fd00::2"),
			DNS: []netip.Addr{netip.MustParseAddr("10.0.2.2")}, MTU: 1500,
		},
	}
	s, err := p.Encode()
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(s, "sandbox.v=1 ") || !strings.Contains(s, "sandbox.channels=vsock:fs.0=1024,disk=1025,control=1026") {
		t.Errorf("encoded %q", s)
	}
	back, warnings, err := Parse("console=ttyS0 " + s + " panic=-1")
	if err != nil || len(warnings) > 0 || !reflect.DeepEqual(back, p) {
		t.Errorf("read back %+v, %q, %v; want %+v", back, warnings, err, p)
	}
	if s, err := (Params{}).Encode(); err != nil || s != "sandbox.v=1" {
		t.Errorf("zero params encode as %q, %v", s, err)
	}
}

func TestEncodeRefuses(t *testing.T) {
	many := make([]Mount, 60)
	for i := range many {
		many[i] = Mount{Channel: "fs." + strings.Repeat("x", 10) + string(rune('a'+i%26)) + string(rune('a'+i/26)), Target: "/mnt/" + strings.Repeat("d", 12) + string(rune('a'+i%26)) + string(rune('a'+i/26))}
	}
	for name, p := range map[string]Params{
		"too long":        {Mounts: many},
		"relative target": {Mounts: []Mount{{Channel: "fs.0", Target: "x"}}},
		"bad hostname":    {Hostname: "a b"},
		"network w/o MTU": {Net: &Net{IP4: netip.MustParsePrefix("10.0.2.15/24"), Gateway4: netip.MustParseAddr("10.0.2.2")}},
		"IPv6 gateway4":   {Net: &Net{IP4: netip.MustParsePrefix("10.0.2.15/24"), Gateway4: netip.MustParseAddr("fd00::2"), MTU: 1500}},
	} {
		if s, err := p.Encode(); err == nil {
			t.Errorf("%s: encoded as %q", name, s)
		}
	}
}

// FuzzParse feeds Parse arbitrary command lines (the guest reads its own,
// but a bug here is a boot that fails for one odd mount path): it must not
// panic, and whatever it accepts must encode and read back unchanged.
func FuzzParse(f *testing.F) {
	f.Add("sandbox.v=1 sandbox.root=nbd:disk sandbox.channels=vsock:control=1024,disk=1025 sandbox.mounts=fs.0:rw:/a%20b")
	f.Add("sandbox.v=1 sandbox.ip=10.0.2.2/24 sandbox.gateway=10.0.2.1 sandbox.dns=10.0.2.1 sandbox.mtu=1500")
	f.Add(`sandbox.v=1 "sandbox.hostname=x" -- y`)
	f.Fuzz(func(t *testing.T, cmdline string) {
		p, _, err := Parse(cmdline)
		if err != nil {
			return
		}
		s, err := p.Encode()
		if err != nil {
			if strings.Contains(err.Error(), "more than") {
				return
			}
			t.Fatalf("Parse accepted %q but Encode refused %+v: %v", cmdline, p, err)
		}
		back, _, err := Parse(s)
		if err != nil || !back.equal(p) {
			t.Fatalf("%q read back as %+v, %v; want %+v", s, back, err, p)
		}
	})
}
