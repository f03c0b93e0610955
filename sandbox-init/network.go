//go:build linux

package main

import (
	"fmt"

	"golang.org/x/sys/unix"
)

// loopbackUp gives lo 127.0.0.1/8 and brings it up.
func loopbackUp() error {
	s, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return err
	}
	defer unix.Close(s)
	for _, set := range []struct {
		req  uint
		addr []byte
	}{
		{unix.SIOCSIFADDR, []byte{127, 0, 0, 1}},
		{unix.SIOCSIFNETMASK, []byte{255, 0, 0, 0}},
	} {
		ifr, err := unix.NewIfreq("lo")
		if err != nil {
			return err
		}
		if err := ifr.SetInet4Addr(set.addr); err != nil {
			return err
		}
		if err := unix.IoctlIfreq(s, set.req, ifr); err != nil {
			return fmt.Errorf("lo: ioctl %#x: %w", set.req, err)
		}
	}
	ifr, err := unix.NewIfreq("lo")
	if err != nil {
		return err
	}
	if err := unix.IoctlIfreq(s, unix.SIOCGIFFLAGS, ifr); err != nil {
		return fmt.Errorf("lo: get flags: %w", err)
	}
	ifr.SetUint16(ifr.Uint16() | unix.IFF_UP)
	if err := unix.IoctlIfreq(s, unix.SIOCSIFFLAGS, ifr); err != nil {
		return fmt.Errorf("lo: set up: %w", err)
	}
	return nil
}
