//go:build linux

package main

import (
	"fmt"
	"os"

	"golang.org/x/sys/unix"

	"github.com/torkbot/sandbox/bootparams"
	"github.com/torkbot/sandbox/sandbox-init/channel"
	"github.com/torkbot/sandbox/sandbox-init/fuserelay"
)

// mountHostFilesystems mounts each filesystem the host serves (package
// vfs) on its target, relaying /dev/fuse to its channel. Targets must
// exist: on a read-only root they cannot be made.
func mountHostFilesystems(mounts []bootparams.Mount, log *console) error {
	for _, m := range mounts {
		if err := ensureMountPoint(m.Target, false); err != nil {
			return fmt.Errorf("host filesystem on channel %q: %w", m.Channel, err)
		}
		ch, err := channel.Open(m.Channel)
		if err != nil {
			return err
		}
		// Non-blocking, so that the relay's reads go through the poller
		// and closing the file ends them.
		fd, err := unix.Open("/dev/fuse", unix.O_RDWR|unix.O_CLOEXEC|unix.O_NONBLOCK, 0)
		if err != nil {
			ch.Close()
			return fmt.Errorf("open /dev/fuse: %w", err)
		}
		flags := uintptr(unix.MS_NOSUID | unix.MS_NODEV)
		if m.ReadOnly {
			flags |= unix.MS_RDONLY
		}
		// default_permissions: the kernel checks the modes vfs shows;
		// allow_other: every user of the guest may use the mount.
		data := fmt.Sprintf("fd=%d,rootmode=40000,user_id=0,group_id=0,allow_other,default_permissions", fd)
		if err := (mount{"sandbox-fs", m.Target, "fuse", flags, data}).mount(); err != nil {
			unix.Close(fd)
			ch.Close()
			return err
		}
		// Only now: a /dev/fuse with no mount behind it yet cannot join
		// the runtime poller (reads then fail "not pollable").
		dev := os.NewFile(uintptr(fd), "/dev/fuse")
		go func() {
			if err := fuserelay.Relay(dev, ch); err != nil {
				log.logf("host filesystem %s: %v", m.Target, err)
			}
		}()
	}
	return nil
}

// unmountHostFilesystems detaches the host filesystems, so that nothing
// waits on the host while the guest shuts down.
func unmountHostFilesystems(mounts []bootparams.Mount, log *console) {
	for _, m := range mounts {
		if err := unix.Unmount(m.Target, unix.MNT_DETACH); err != nil {
			log.logf("warning: unmount %s: %v", m.Target, err)
		}
	}
}
