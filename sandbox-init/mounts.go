//go:build linux

package main

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"github.com/torkbot/sandbox/bootparams"
)

const (
	// newRootDir is where the root filesystem is mounted before the switch;
	// the initramfs provides it.
	newRootDir = "/newroot"
	// rootDeviceTimeout bounds the wait for the root block device.
	rootDeviceTimeout = 5 * time.Second
)

type mount struct {
	source, target, fstype string
	flags                  uintptr
	data                   string
}

func (m mount) mount() error {
	if err := unix.Mount(m.source, m.target, m.fstype, m.flags, m.data); err != nil {
		return fmt.Errorf("mount %s (%s) on %s: %w", m.source, m.fstype, m.target, err)
	}
	return nil
}

// mountEarly mounts what init needs inside the initramfs.
func mountEarly() error {
	for _, m := range []mount{
		{"proc", "/proc", "proc", unix.MS_NOSUID | unix.MS_NODEV | unix.MS_NOEXEC, ""},
		{"sysfs", "/sys", "sysfs", unix.MS_NOSUID | unix.MS_NODEV | unix.MS_NOEXEC, ""},
		{"devtmpfs", "/dev", "devtmpfs", unix.MS_NOSUID, "mode=0755"},
	} {
		if err := os.MkdirAll(m.target, 0o755); err != nil {
			return err
		}
		if err := m.mount(); err != nil {
			return err
		}
	}
	return nil
}

// mountRoot waits for the root device and mounts it on newRootDir.
func mountRoot(cfg bootparams.Params) error {
	device, fsType := cfg.Root()
	if err := waitForBlockDevice(device, rootDeviceTimeout); err != nil {
		return err
	}
	var flags uintptr
	if !cfg.RootWritable {
		flags |= unix.MS_RDONLY
	}
	if err := os.MkdirAll(newRootDir, 0o755); err != nil {
		return err
	}
	return mount{device, newRootDir, fsType, flags, ""}.mount()
}

func waitForBlockDevice(path string, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		fi, err := os.Stat(path)
		if err == nil {
			if fi.Mode()&os.ModeDevice == 0 || fi.Mode()&os.ModeCharDevice != 0 {
				return fmt.Errorf("root device %s is not a block device", path)
			}
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("root device %s did not appear within %v (is the disk attached, and its driver built into the kernel?)", path, timeout)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// switchRoot makes newRoot the root, as switch_root(8) does: move the API
// filesystems into it, free the initramfs, move newRoot onto / and chroot
// into it. writable says whether missing mount points may be created.
func switchRoot(newRoot string, writable bool, log *console) error {
	for _, dir := range []string{"/dev", "/proc", "/sys"} {
		target := newRoot + dir
		if err := ensureMountPoint(target, writable); err != nil {
			return err
		}
		if err := unix.Mount(dir, target, "", unix.MS_MOVE, ""); err != nil {
			return fmt.Errorf("move %s to %s: %w", dir, target, err)
		}
	}
	if err := os.Chdir(newRoot); err != nil {
		return err
	}
	// The initramfs cannot be unmounted: delete its files, or they would
	// pin memory for the life of the VM.
	if err := freeInitramfs(); err != nil {
		log.logf("warning: initramfs not fully freed: %v", err)
	}
	if err := unix.Mount(".", "/", "", unix.MS_MOVE, ""); err != nil {
		return fmt.Errorf("move %s to /: %w", newRoot, err)
	}
	if err := unix.Chroot("."); err != nil {
		return fmt.Errorf("chroot %s: %w", newRoot, err)
	}
	return os.Chdir("/")
}

// freeInitramfs deletes everything on the initramfs, staying on its
// filesystem: mounted filesystems (the new root) are left alone.
func freeInitramfs() error {
	var fs unix.Statfs_t
	if err := unix.Statfs("/", &fs); err != nil {
		return err
	}
	if fs.Type != unix.RAMFS_MAGIC && fs.Type != unix.TMPFS_MAGIC {
		return fmt.Errorf("/ is not an initramfs (filesystem type %#x): not deleting it", fs.Type)
	}
	var st unix.Stat_t
	if err := unix.Lstat("/", &st); err != nil {
		return err
	}
	return removeContents("/", st.Dev)
}

func removeContents(dir string, dev uint64) error {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return err
	}
	var errs []error
	for _, e := range entries {
		path := filepath.Join(dir, e.Name())
		var st unix.Stat_t
		if err := unix.Lstat(path, &st); err != nil {
			errs = append(errs, err)
			continue
		}
		if st.Dev != dev {
			continue // another filesystem is mounted here
		}
		if st.Mode&unix.S_IFMT == unix.S_IFDIR {
			if err := removeContents(path, dev); err != nil {
				errs = append(errs, err)
			}
			err = unix.Rmdir(path)
		} else {
			err = unix.Unlink(path)
		}
		if err != nil {
			errs = append(errs, fmt.Errorf("remove %s: %w", path, err))
		}
	}
	return errors.Join(errs...)
}

// mountSystem mounts the filesystems every command expects, in the new root.
func mountSystem(writable bool) error {
	for _, m := range []mount{
		// newinstance: the guest's ptys are its own; ptmxmode lets any user
		// open /dev/pts/ptmx; gid 5 is "tty" in Debian and Alpine.
		{"devpts", "/dev/pts", "devpts", unix.MS_NOSUID | unix.MS_NOEXEC, "newinstance,ptmxmode=0666,mode=0620,gid=5"},
		{"shm", "/dev/shm", "tmpfs", unix.MS_NOSUID | unix.MS_NODEV, "mode=1777"},
		{"tmpfs", "/tmp", "tmpfs", unix.MS_NOSUID | unix.MS_NODEV, "mode=1777"},
		{"tmpfs", "/run", "tmpfs", unix.MS_NOSUID | unix.MS_NODEV, "mode=0755"},
	} {
		// /dev is a devtmpfs: always writable.
		if err := ensureMountPoint(m.target, writable || strings.HasPrefix(m.target, "/dev/")); err != nil {
			return err
		}
		if err := m.mount(); err != nil {
			return err
		}
	}
	for link, target := range map[string]string{
		"/dev/fd":     "/proc/self/fd",
		"/dev/stdin":  "/proc/self/fd/0",
		"/dev/stdout": "/proc/self/fd/1",
		"/dev/stderr": "/proc/self/fd/2",
	} {
		if err := os.Symlink(target, link); err != nil && !errors.Is(err, os.ErrExist) {
			return err
		}
	}
	return nil
}

// ensureMountPoint makes sure dir exists, creating it only if it may.
func ensureMountPoint(dir string, mayCreate bool) error {
	fi, err := os.Stat(dir)
	switch {
	case err == nil && fi.IsDir():
		return nil
	case err == nil:
		return fmt.Errorf("mount point %s is not a directory", dir)
	case !errors.Is(err, os.ErrNotExist):
		return err
	case !mayCreate:
		return fmt.Errorf("mount point %s is missing on the read-only root: the image must provide it", dir)
	}
	return os.Mkdir(dir, 0o755)
}
