package channel

import (
	"strings"
	"testing"
)

func TestParseTransport(t *testing.T) {
	tr, err := ParseTransport("vsock:control=1024,fs.0=1025,disk=1026")
	if err != nil {
		t.Fatal(err)
	}
	if !tr.IsVsock() || tr.vsock["control"] != 1024 || tr.vsock["fs.0"] != 1025 || tr.vsock["disk"] != 1026 || len(tr.vsock) != 3 {
		t.Errorf("parsed %v", tr.vsock)
	}
	for _, bad := range []string{
		"", "virtio:control=1", "vsock:", "vsock:control", "vsock:control=0", "vsock:control=4294967295",
		"vsock:control=x", "vsock:=5", "vsock:a b=5", "vsock:a=5,a=6", "vsock:a=5,b=5", "vsock:" + strings.Repeat("x", 65) + "=5",
	} {
		if _, err := ParseTransport(bad); err == nil {
			t.Errorf("ParseTransport(%q) accepted", bad)
		}
	}
	if (Transport{}).IsVsock() {
		t.Error("zero Transport is vsock")
	}
}

func FuzzParseTransport(f *testing.F) {
	f.Add("vsock:control=1024,fs.0=1025")
	f.Add("vsock:a=1,b=2,c=4294967294")
	f.Fuzz(func(t *testing.T, s string) {
		tr, err := ParseTransport(s)
		if err != nil {
			return
		}
		for name, port := range tr.vsock {
			if name == "" || port == 0 || port == 0xFFFFFFFF {
				t.Fatalf("accepted %q=%d from %q", name, port, s)
			}
		}
	})
}
