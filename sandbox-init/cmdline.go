//go:build linux

package main

import (
	"fmt"
	"net/netip"
	"net/url"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/torkbot/sandbox/sandbox-init/channel"
)

// bootConfig is what the kernel command line tells init; see README.md.
type bootConfig struct {
	root         string // sandbox.root: the root block device
	rootFSType   string // sandbox.rootfstype
	rootReadOnly bool   // sandbox.rootmode=ro|rw
	hostname     string // sandbox.hostname
	// net configures eth0; nil without sandbox.ip (the VM has no NIC).
	net *netConfig
	// mounts is the validated sandbox.mounts value (a string keeps
	// bootConfig comparable); hostMounts parses it.
	mounts string
	// rootNBD, when set, is the channel on which the host serves the root
	// disk over NBD (sandbox.root=nbd:<channel>); init attaches it as
	// /dev/nbdN, which root then names.
	rootNBD string
	// channels is the validated sandbox.channels value; channelTransport
	// parses it.
	channels string
}

// hostMount is a filesystem the host serves over FUSE on a channel.
type hostMount struct {
	channel  string
	readOnly bool
	target   string
}

// netConfig is eth0's configuration: sandbox.ip, sandbox.gateway,
// sandbox.ip6, sandbox.gateway6, sandbox.dns, sandbox.mtu.
type netConfig struct {
	ip4, ip6           netip.Prefix
	gateway4, gateway6 netip.Addr
	dns                []netip.Addr
	mtu                int
}

func defaultBootConfig() bootConfig {
	return bootConfig{
		root:         "/dev/vda",
		rootFSType:   "ext4",
		rootReadOnly: true,
		hostname:     "sandbox",
	}
}

// parseCmdline reads the sandbox.* parameters of a kernel command line.
// Other parameters are the kernel's; unknown sandbox.* ones are returned as
// warnings so that a typo shows on the console without failing the boot.
func parseCmdline(cmdline string) (cfg bootConfig, warnings []string, err error) {
	cfg = defaultBootConfig()
	for _, param := range splitCmdline(cmdline) {
		key, value, _ := strings.Cut(param, "=")
		if !strings.HasPrefix(key, "sandbox.") {
			continue
		}
		switch key {
		case "sandbox.root":
			if ch, ok := strings.CutPrefix(value, "nbd:"); ok {
				if ch == "" || len(ch) > 64 || strings.Trim(ch, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-") != "" {
					return cfg, nil, fmt.Errorf("sandbox.root=%q: want nbd:<channel name>", value)
				}
				cfg.rootNBD = ch
				continue
			}
			cfg.rootNBD = ""
			if !filepath.IsAbs(value) || filepath.Clean(value) != value {
				return cfg, nil, fmt.Errorf("sandbox.root=%q: want an absolute device path such as /dev/vda", value)
			}
			cfg.root = value
		case "sandbox.rootfstype":
			if value == "" || strings.Trim(value, "abcdefghijklmnopqrstuvwxyz0123456789_") != "" {
				return cfg, nil, fmt.Errorf("sandbox.rootfstype=%q: want a filesystem type such as ext4", value)
			}
			cfg.rootFSType = value
		case "sandbox.rootmode":
			switch value {
			case "ro":
				cfg.rootReadOnly = true
			case "rw":
				cfg.rootReadOnly = false
			default:
				return cfg, nil, fmt.Errorf("sandbox.rootmode=%q: want ro or rw", value)
			}
		case "sandbox.ip", "sandbox.ip6", "sandbox.gateway", "sandbox.gateway6", "sandbox.dns", "sandbox.mtu":
			if cfg.net == nil {
				cfg.net = &netConfig{}
			}
			if err := cfg.net.set(key, value); err != nil {
				return cfg, nil, err
			}
		case "sandbox.hostname":
			if !validHostname(value) {
				return cfg, nil, fmt.Errorf("sandbox.hostname=%q: want 1-64 letters, digits, '-' and '.'", value)
			}
			cfg.hostname = value
		case "sandbox.channels":
			if _, err := channel.ParseTransport(value); err != nil {
				return cfg, nil, fmt.Errorf("sandbox.channels=%q: %w", value, err)
			}
			cfg.channels = value
		case "sandbox.mounts":
			if _, err := parseMounts(value); err != nil {
				return cfg, nil, fmt.Errorf("sandbox.mounts=%q: %w", value, err)
			}
			cfg.mounts = value
		default:
			warnings = append(warnings, fmt.Sprintf("unknown kernel parameter %s", key))
		}
	}
	if n := cfg.net; n != nil && (!n.ip4.IsValid() || !n.gateway4.IsValid() || n.mtu == 0) {
		return cfg, nil, fmt.Errorf("network parameters need at least sandbox.ip, sandbox.gateway and sandbox.mtu")
	}
	return cfg, warnings, nil
}

func (n *netConfig) set(key, value string) error {
	var err error
	switch key {
	case "sandbox.ip":
		n.ip4, err = netip.ParsePrefix(value)
		if err == nil && !n.ip4.Addr().Is4() {
			err = fmt.Errorf("not IPv4")
		}
	case "sandbox.ip6":
		n.ip6, err = netip.ParsePrefix(value)
		if err == nil && !n.ip6.Addr().Is6() {
			err = fmt.Errorf("not IPv6")
		}
	case "sandbox.gateway":
		n.gateway4, err = netip.ParseAddr(value)
	case "sandbox.gateway6":
		n.gateway6, err = netip.ParseAddr(value)
	case "sandbox.dns":
		n.dns = nil
		for _, a := range strings.Split(value, ",") {
			addr, perr := netip.ParseAddr(a)
			if perr != nil {
				err = perr
				break
			}
			n.dns = append(n.dns, addr)
		}
	case "sandbox.mtu":
		n.mtu, err = strconv.Atoi(value)
		if err == nil && (n.mtu < 68 || n.mtu > 65535) {
			err = fmt.Errorf("out of range 68..65535")
		}
	}
	if err != nil {
		return fmt.Errorf("%s=%q: %w", key, value, err)
	}
	return nil
}

// splitCmdline splits a command line into parameters as the kernel does:
// on spaces outside double quotes, the quotes removed. Parameters after
// "--" belong to init's argv and are not returned.
func splitCmdline(cmdline string) []string {
	var params []string
	var cur strings.Builder
	inQuotes, inParam := false, false
	flush := func() bool {
		if !inParam {
			return true
		}
		p := cur.String()
		cur.Reset()
		inParam = false
		if p == "--" {
			return false
		}
		params = append(params, p)
		return true
	}
	for _, r := range cmdline {
		switch {
		case r == '"':
			inQuotes = !inQuotes
			inParam = true
		case !inQuotes && (r == ' ' || r == '\t' || r == '\n'):
			if !flush() {
				return params
			}
		default:
			cur.WriteRune(r)
			inParam = true
		}
	}
	flush()
	return params
}

func validHostname(name string) bool {
	if name == "" || len(name) > 64 || name[0] == '-' || name[0] == '.' {
		return false
	}
	return strings.Trim(name, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-.") == ""
}

// channelTransport returns how channels reach the host.
func (c bootConfig) channelTransport() channel.Transport {
	if c.channels == "" {
		return channel.Transport{}
	}
	t, _ := channel.ParseTransport(c.channels) // validated by parseCmdline
	return t
}

// hostMounts returns the host filesystems to mount.
func (c bootConfig) hostMounts() []hostMount {
	mounts, _ := parseMounts(c.mounts) // validated by parseCmdline
	return mounts
}

// parseMounts reads "<channel>:<ro|rw>:<target>,..." with the target
// percent-encoded (",", " " and "%" must be).
func parseMounts(value string) ([]hostMount, error) {
	if value == "" {
		return nil, nil
	}
	var mounts []hostMount
	channels, targets := map[string]bool{}, map[string]bool{}
	for _, entry := range strings.Split(value, ",") {
		name, rest, ok1 := strings.Cut(entry, ":")
		mode, encoded, ok2 := strings.Cut(rest, ":")
		if !ok1 || !ok2 {
			return nil, fmt.Errorf("%q: want <channel>:<ro|rw>:<target>", entry)
		}
		if name == "" || len(name) > 64 || strings.Trim(name, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-") != "" {
			return nil, fmt.Errorf("%q: channel name must be 1-64 of A-Za-z0-9._-", entry)
		}
		if mode != "ro" && mode != "rw" {
			return nil, fmt.Errorf("%q: mode must be ro or rw", entry)
		}
		target, err := url.PathUnescape(encoded)
		if err != nil {
			return nil, fmt.Errorf("%q: target: %w", entry, err)
		}
		if !filepath.IsAbs(target) || filepath.Clean(target) != target || target == "/" || strings.ContainsRune(target, 0) {
			return nil, fmt.Errorf("%q: target must be a clean absolute path other than /", entry)
		}
		if channels[name] || targets[target] {
			return nil, fmt.Errorf("%q: channel or target used twice", entry)
		}
		channels[name], targets[target] = true, true
		mounts = append(mounts, hostMount{channel: name, readOnly: mode == "ro", target: target})
	}
	return mounts, nil
}
