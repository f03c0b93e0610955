//go:build linux

package main

import "testing"

func TestCmdlineRootNBDAndChannels(t *testing.T) {
	cfg, warnings, err := parseCmdline("console=ttyS0 sandbox.root=/dev/vda sandbox.root=nbd:disk sandbox.channels=vsock:control=1024,disk=1025")
	if err != nil || len(warnings) != 0 {
		t.Fatal(err, warnings)
	}
	if cfg.rootNBD != "disk" || !cfg.channelTransport().IsVsock() {
		t.Errorf("rootNBD %q, transport vsock=%v", cfg.rootNBD, cfg.channelTransport().IsVsock())
	}
	// A later device path wins over an earlier nbd: root.
	if cfg, _, _ := parseCmdline("sandbox.root=nbd:disk sandbox.root=/dev/vdb"); cfg.rootNBD != "" || cfg.root != "/dev/vdb" {
		t.Errorf("root %q rootNBD %q", cfg.root, cfg.rootNBD)
	}
	if cfg, _, _ := parseCmdline("quiet"); cfg.channelTransport().IsVsock() {
		t.Error("no sandbox.channels: vsock")
	}
	for _, bad := range []string{"sandbox.root=nbd:", "sandbox.root=nbd:a/b", "sandbox.channels=serial:x=1", "sandbox.channels=vsock:x=0"} {
		if _, _, err := parseCmdline(bad); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
}
